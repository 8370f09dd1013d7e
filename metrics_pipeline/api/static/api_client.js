// What every portal page shares: calls to the metrics API with this tab's token, and the token
// form of templates/_token_form.html (shown when the API refuses the token, the token kept in
// sessionStorage, forgotten on request). Each page calls metricsApiClient() once.
(function () {
  "use strict";

  const TOKEN_KEY = "metricsApiToken";
  const el = (id) => document.getElementById(id);

  class AuthError extends Error {}

  // options: authRequired; showError(message); onToken() (called once a token was entered).
  function metricsApiClient(options) {
    const authRequired = options.authRequired;

    function token() {
      return authRequired ? sessionStorage.getItem(TOKEN_KEY) : null;
    }

    async function api(path, method) {
      const headers = { Accept: "application/json" };
      const t = token();
      if (t) headers.Authorization = "Bearer " + t;
      let response;
      try {
        response = await fetch(path, { method: method || "GET", headers, cache: "no-store" });
      } catch (e) {
        throw new Error("the metrics API cannot be reached");
      }
      if (response.status === 401 && authRequired) {
        sessionStorage.removeItem(TOKEN_KEY);
        throw new AuthError("the API token was refused; enter a valid token");
      }
      let body = null;
      try {
        body = await response.json();
      } catch (e) {
        body = null;
      }
      if (!response.ok) {
        const detail = body && body.detail ? body.detail : response.statusText;
        throw new Error("HTTP " + response.status + ": " + detail);
      }
      return body;
    }

    function askToken(message) {
      if (message) options.showError(message);
      el("token-form").hidden = false;
      el("token").focus();
    }

    el("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = el("token").value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      el("token").value = "";
      el("token-form").hidden = true;
      options.onToken();
    });
    el("forget-token").hidden = !authRequired;
    el("forget-token").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      askToken();
    });

    return {
      AuthError,
      api,
      askToken,
      // True when the page must wait for a token before calling the API.
      needsToken: () => authRequired && !token(),
    };
  }

  window.metricsApiClient = metricsApiClient;
})();
