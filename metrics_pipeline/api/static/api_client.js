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
        const error = new Error("HTTP " + response.status + ": " + detail);
        error.status = response.status;
        throw error;
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

  // A page refreshed in place (templates/_page.html): its settings from <main id=rootId>, its
  // error banner (messages after errorPrefix), the API client, and run(load, inputs): calls
  // load() now, every refreshSeconds, on a change of the inputs and on "Refresh now", one at a
  // time, with the token form, the banner and state (refreshes, lastError) kept up to date.
  function metricsPage(rootId, errorPrefix, state) {
    const root = el(rootId);
    const config = {
      refreshSeconds: Number(root.dataset.refreshSeconds) || 60,
      authRequired: root.dataset.authRequired === "true",
    };
    let refresh = () => {};
    function showError(message) {
      state.lastError = message;
      el("error").textContent = errorPrefix + message;
      el("error").hidden = false;
    }
    const client = metricsApiClient({ authRequired: config.authRequired, showError, onToken: () => refresh() });

    function run(load, inputs) {
      let busy = false;
      refresh = async function () {
        if (busy) return;
        if (client.needsToken()) {
          client.askToken();
          return;
        }
        busy = true;
        try {
          await load();
          state.refreshes += 1;
          state.lastError = null;
          el("error").hidden = true;
          el("token-form").hidden = true;
          el("last-updated").textContent = utcMinutes(new Date());
        } catch (e) {
          if (e instanceof client.AuthError) client.askToken(e.message);
          else showError(e.message);
        } finally {
          busy = false;
        }
      };
      for (const id of inputs) el(id).addEventListener("change", refresh);
      el("refresh-now").addEventListener("click", refresh);
      window.addEventListener("load", () => {
        refresh();
        setInterval(refresh, config.refreshSeconds * 1000);
      });
    }

    return { api: client.api, config, el, showError, run };
  }

  // "2026-12-01T10:00:00.000Z" -> "2026-12-01 10:00 UTC".
  function utcMinutes(date) {
    return date.toISOString().replace("T", " ").slice(0, 16) + " UTC";
  }

  window.metricsApiClient = metricsApiClient;
  window.metricsPage = metricsPage;
  window.utcMinutes = utcMinutes;
})();
