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

  function layout(yTitle, range, yRange) {
    return {
      margin: { t: 10, r: 20, b: 40, l: 60 },
      xaxis: { type: "date", range, autorange: false },
      yaxis: yRange ? { title: { text: yTitle }, range: yRange, autorange: false } : { title: { text: yTitle } },
      showlegend: true,
      legend: { orientation: "h" },
    };
  }

  // ok / warning / page: the colour classes of dashboard.css and the words beside them.
  function budgetState(remaining) {
    if (remaining === null || remaining === undefined) return { words: "no data", level: "" };
    if (remaining < 0) return { words: "exhausted", level: "page" };
    if (remaining < 0.25) return { words: "low", level: "warning" };
    return { words: "ok", level: "ok" };
  }

  function alertState(name, alert) {
    if (!alert) return { words: "no data", level: "" };
    if (alert.firing) return { words: "firing", level: name === "page" ? "page" : "warning" };
    if (alert.gated) return { words: "quiet (too few requests to judge)", level: "ok" };
    return { words: "ok", level: "ok" };
  }

  function setState(cell, text, level) {
    cell.textContent = text;
    cell.className = level ? "state-" + level : "";
    cell.dataset.state = level;
  }

  // "2026-12-01T10:00:00.000Z" -> "2026-12-01 10:00 UTC".
  function utc(date) {
    return date.toISOString().replace("T", " ").slice(0, 16) + " UTC";
  }

  // From the first day's midnight to the end of the last day (or of the chosen range).
  function budgetRange(budget, range) {
    if (!budget.length) return range;
    const end = new Date(budget[budget.length - 1].day + "T00:00:00Z");
    end.setUTCDate(end.getUTCDate() + 1);
    const last = end.toISOString() > range[1] ? end.toISOString() : range[1];
    return [budget[0].day + "T00:00:00Z", last];
  }

  function draw(series, slo, scenario, from, to) {
    const x = series.points.map((p) => p.startTime);
    const y = series.points.map((p) => p.availability);
    const target = scenario.availabilityTarget;
    const range = [from.toISOString(), to.toISOString()];
    const known = y.filter((v) => v !== null && v !== undefined);
    // Room above 100 % so a target or a perfect hour is never drawn on the frame's edge.
    const low = Math.min(target, ...known);
    const yRange = [Math.max(0, low - Math.max(0.5, (100 - low) * 0.2)), 100 + Math.max(0.2, (100 - low) * 0.1)];
    Plotly.react(
      el("chart-availability"),
      [
        { x, y, name: "availability", mode: "lines+markers", type: "scatter", line: { color: "#1f77b4" } },
        // Drawn last, so it stays visible above an availability line at the target or at 100 %.
        { x: range, y: [target, target], name: "target " + target + " %", mode: "lines", line: { dash: "dash", color: "#b00020", width: 2 } },
      ],
      layout("%", range, yRange),
      { displaylogo: false, responsive: true }
    );
    const levelName = series.timeStampTypeId === 1 ? "Hourly" : "Daily";
    el("caption-availability").textContent = levelName + " availability (%) · " + scenario.scenarioName;
    const empty = known.length === 0;
    el("empty-availability").hidden = !empty;
    el("empty-availability").textContent = "No availability data for this range (" + utc(from) + " to " + utc(to) + ")";
    const mine = slo.scenarios.find((s) => s.scenarioId === scenario.scenarioId);
    const budget = mine ? mine.budget : [];
    const days = Number(el("period").value);
    Plotly.react(
      el("chart-budget"),
      // Each day's bar centred on its noon, so the bar covers the day it speaks of.
      [{ x: budget.map((b) => b.day + " 12:00"), y: budget.map((b) => (b.remaining === null ? null : 100 * b.remaining)), name: "budget remaining", type: "bar", marker: { color: budget.map((b) => (b.remaining !== null && b.remaining < 0 ? "#b00020" : "#1f77b4")) } }],
      layout("% of budget", budgetRange(budget, range)),
      { displaylogo: false, responsive: true }
    );
    el("caption-budget").textContent =
      "Error budget remaining at the end of each day (rolling 30 days), last " + days + (days === 1 ? " day" : " days");
    el("slo-target").textContent = percent(mine ? mine.target : null, 2);
    el("slo-availability").textContent = percent(mine ? mine.availability30d : null, 3);
    const remaining = mine ? mine.budgetRemaining : null;
    const b = budgetState(remaining);
    setState(el("slo-budget"), remaining === null || remaining === undefined ? "–" : (100 * remaining).toFixed(1) + " % · " + b.words, b.level);
    for (const name of ["page", "ticket"]) {
      const a = alertState(name, mine ? mine.alerts.find((al) => al.name === name) : null);
      setState(el("slo-" + name), a.words, a.level);
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
      const days = Math.max(1, Math.round(Number(el("period").value)));
      const [series, slo] = await Promise.all([
        api("/api/availability/scenarios/" + encodeURIComponent(id) + "?timeStampTypeId=" + level + range),
        api("/api/availability/slo?days=" + days),
      ]);
      draw(series, slo, scenario, from, to);
      state.scenario = id;
      state.refreshes += 1;
      state.lastError = null;
      el("error").hidden = true;
      el("token-form").hidden = true;
      el("last-updated").textContent = utc(new Date());
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
