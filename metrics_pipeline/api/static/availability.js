// The availability view: a scenario's availability (hourly or daily) against its target, and
// its error budget remaining per day, refreshed in place every N seconds with fetch().
(function () {
  "use strict";

  const root = document.getElementById("availability");
  const config = {
    refreshSeconds: Number(root.dataset.refreshSeconds) || 60,
    authRequired: root.dataset.authRequired === "true",
  };
  const el = (id) => document.getElementById(id);

  // State visible in the console (and to the browser test).
  const state = { refreshes: 0, loadedAt: Date.now(), lastError: null, scenario: null };
  window.availabilityView = state;

  const { api, askToken, needsToken, AuthError } = metricsApiClient({
    authRequired: config.authRequired,
    showError,
    onToken: refresh,
  });

  function showError(message) {
    state.lastError = message;
    el("error").textContent = "Could not load availability: " + message;
    el("error").hidden = false;
  }

  function percent(value, digits) {
    return value === null || value === undefined ? "–" : value.toFixed(digits) + " %";
  }

  async function loadScenarios() {
    const body = await api("/api/availability/scenarios");
    const select = el("scenario");
    const current = select.value;
    select.replaceChildren(
      ...body.scenarios.map((s) => {
        const o = document.createElement("option");
        o.value = s.scenarioId;
        o.textContent = s.scenarioName + " (" + s.scenarioId + ")";
        return o;
      })
    );
    if (current && body.scenarios.some((s) => s.scenarioId === current)) select.value = current;
    return body.scenarios;
  }

  function layout(yTitle) {
    return {
      margin: { t: 10, r: 20, b: 40, l: 60 },
      xaxis: { type: "date" },
      yaxis: { title: { text: yTitle } },
      showlegend: true,
      legend: { orientation: "h" },
    };
  }

  function draw(series, slo, scenario) {
    const x = series.points.map((p) => p.startTime);
    const target = scenario.availabilityTarget;
    Plotly.react(
      el("chart-availability"),
      [
        { x, y: series.points.map((p) => p.availability), name: "availability", mode: "lines+markers", type: "scatter" },
        { x: x.length ? [x[0], x[x.length - 1]] : [], y: [target, target], name: "target " + target + " %", mode: "lines", line: { dash: "dash" } },
      ],
      layout("%"),
      { displaylogo: false, responsive: true }
    );
    el("caption-availability").textContent =
      (series.timeStampTypeId === 1 ? "Hourly" : "Daily") + " availability (%) · " + scenario.scenarioName;
    const mine = slo.scenarios.find((s) => s.scenarioId === scenario.scenarioId);
    const budget = mine ? mine.budget : [];
    Plotly.react(
      el("chart-budget"),
      [{ x: budget.map((b) => b.day), y: budget.map((b) => (b.remaining === null ? null : 100 * b.remaining)), name: "budget remaining", type: "bar" }],
      layout("% of budget"),
      { displaylogo: false, responsive: true }
    );
    el("slo-target").textContent = percent(mine ? mine.target : null, 2);
    el("slo-availability").textContent = percent(mine ? mine.availability30d : null, 3);
    el("slo-budget").textContent = mine && mine.budgetRemaining !== null ? (100 * mine.budgetRemaining).toFixed(1) + " %" : "–";
    for (const name of ["page", "ticket"]) {
      const alert = mine ? mine.alerts.find((a) => a.name === name) : null;
      const cell = el("slo-" + name);
      cell.textContent = !alert ? "–" : alert.firing ? "FIRING" : alert.gated ? "quiet (gated)" : "ok";
      cell.className = alert && alert.firing ? "firing" : "";
    }
  }

  let busy = false;
  async function refresh() {
    if (busy) return;
    if (needsToken()) {
      askToken();
      return;
    }
    busy = true;
    try {
      const scenarios = await loadScenarios();
      const id = el("scenario").value;
      const scenario = scenarios.find((s) => s.scenarioId === id);
      if (!scenario) throw new Error("no scenarios in the Scenario table yet");
      const level = Number(el("level").value);
      const to = new Date();
      to.setUTCMinutes(0, 0, 0);
      to.setUTCHours(to.getUTCHours() + 1);
      const from = new Date(to.getTime() - Number(el("period").value) * 86400000);
      if (level === 2) from.setUTCHours(0, 0, 0, 0);
      const range = "&from=" + from.toISOString() + "&to=" + to.toISOString();
      const [series, slo] = await Promise.all([
        api("/api/availability/scenarios/" + encodeURIComponent(id) + "?timeStampTypeId=" + level + range),
        api("/api/availability/slo"),
      ]);
      draw(series, slo, scenario);
      state.scenario = id;
      state.refreshes += 1;
      state.lastError = null;
      el("error").hidden = true;
      el("token-form").hidden = true;
      el("last-updated").textContent = new Date().toISOString().replace("T", " ").slice(0, 19) + " UTC";
    } catch (e) {
      if (e instanceof AuthError) askToken(e.message);
      else showError(e.message);
    } finally {
      busy = false;
    }
  }

  for (const id of ["scenario", "level", "period"]) el(id).addEventListener("change", refresh);
  el("refresh-now").addEventListener("click", refresh);
  window.addEventListener("load", () => {
    refresh();
    setInterval(refresh, config.refreshSeconds * 1000);
  });
})();
