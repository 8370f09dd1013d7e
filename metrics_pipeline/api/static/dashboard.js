// The biller dashboard: three graphs (hourly, daily, weekly) of one metric of one biller,
// refreshed in place every N seconds with fetch(); the page itself is never reloaded.
(function () {
  "use strict";

  const root = document.getElementById("dashboard");
  const config = {
    refreshSeconds: Number(root.dataset.refreshSeconds) || 60,
    authRequired: root.dataset.authRequired === "true",
    maxPoints: Number(root.dataset.maxPoints) || 1000,
    maxPages: 10,
  };
  const LEVELS = [1, 2, 3];
  const el = (id) => document.getElementById(id);

  // State visible to people debugging in the console (and to the browser test).
  const dashboard = {
    loadedAt: new Date().toISOString(),
    refreshes: 0,
    lastUpdated: null,
    lastError: null,
    metricTypes: [],
    levelNames: {},
    // Per level: points drawn, how many are partial, and the newest hour they hold.
    coverage: {},
    // The biller's objectives as GET /api/metrics/{billerId}/objectives answered.
    objectives: null,
  };
  window.metricsDashboard = dashboard;

  const { api, askToken, needsToken, AuthError } = metricsApiClient({
    authRequired: config.authRequired,
    showError,
    onToken: start,
  });

  function showError(message) {
    const box = el("error");
    box.textContent = message;
    box.hidden = false;
    dashboard.lastError = message;
  }

  function clearError() {
    el("error").hidden = true;
    dashboard.lastError = null;
  }

  function fillSelect(select, items, label, keep) {
    const wanted = items.map((i) => i.id + "=" + label(i)).join("|");
    if (select.dataset.items === wanted) return; // unchanged: leave an open menu alone
    select.dataset.items = wanted;
    const previous = keep ? select.value : null;
    select.replaceChildren();
    for (const item of items) {
      const option = document.createElement("option");
      option.value = String(item.id);
      option.textContent = label(item);
      select.appendChild(option);
    }
    if (previous && items.some((i) => String(i.id) === previous)) select.value = previous;
  }

  async function loadChoices() {
    const [metricTypes, timeStampTypes, billers] = await Promise.all([
      api("/api/metric-types"),
      api("/api/timestamp-types"),
      api("/api/billers"),
    ]);
    dashboard.metricTypes = metricTypes;
    fillSelect(el("metric"), metricTypes, (m) => m.name + " (" + m.unit + ")", true);
    const names = billers.names || {};
    fillSelect(
      el("biller"),
      billers.billers.map((b) => ({ id: b, name: names[String(b)] })),
      (b) => (b.name ? b.name + " (" + b.id + ")" : "Biller " + b.id),
      true
    );
    dashboard.levelNames = Object.fromEntries(timeStampTypes.map((t) => [t.id, t.name]));
    if (billers.billers.length === 0) {
      showError("No biller data in the warehouse yet (or this token may read none).");
      return false;
    }
    return true;
  }

  async function fetchSeries(biller, metric, level, from, to) {
    const points = [];
    let continuation = null;
    for (let page = 0; page < config.maxPages; page++) {
      const query = new URLSearchParams({
        metricTypeId: metric,
        timeStampTypeId: String(level),
        from: from,
        to: to,
        limit: String(config.maxPoints),
      });
      if (continuation) query.set("continuationToken", continuation);
      const body = await api("/api/metrics/" + encodeURIComponent(biller) + "?" + query);
      points.push(...body.points);
      continuation = body.continuationToken;
      if (!continuation) return { body, points };
    }
    return { body: null, points };
  }

  const LEVEL_MS = { 1: 3600000, 2: 86400000, 3: 7 * 86400000 };
  const HOUR_MS = 3600000;

  // Windows with no row are gaps: a null between two points a window or more apart breaks the
  // line, so a missing day is never drawn as if it were there.
  function withGaps(level, points) {
    const out = [];
    for (const p of points) {
      const prev = out.length ? out[out.length - 1] : null;
      if (prev && Date.parse(p.t) - Date.parse(prev.t) > LEVEL_MS[level]) {
        const t = new Date(Date.parse(prev.t) + LEVEL_MS[level]).toISOString().replace(".000Z", "Z");
        out.push({ t, value: null, requestCount: null, gap: true });
      }
      out.push(p);
    }
    return out;
  }

  function coverageText(p) {
    if (p.gap) return "no data";
    if (p.coveredHours == null) return "coverage unknown";
    return p.complete
      ? p.coveredHours + " of " + p.expectedHours + " hours"
      : "partial: " + p.coveredHours + " of " + p.expectedHours + " hours";
  }

  // The newest hour the graph's data holds: the last point's hour, or the last hour its window
  // covers when the window is complete so far.
  function newestHour(level, points) {
    const last = points.length ? points[points.length - 1] : null;
    if (!last) return null;
    const start = Date.parse(last.t);
    if (level === 1) return new Date(start);
    const hours = last.complete ? last.expectedHours : last.coveredHours;
    const newest = hours ? start + (hours - 1) * HOUR_MS : start;
    return new Date(Math.min(newest, Math.floor(Date.now() / HOUR_MS) * HOUR_MS));
  }

  function draw(level, series, metric) {
    // Plotly has no time zones: strip the Z and label the axis UTC.
    const points = withGaps(level, series.points);
    const x = points.map((p) => p.t.replace("Z", ""));
    const y = points.map((p) => p.value);
    const info = points.map((p) => [p.requestCount, coverageText(p)]);
    // Partial points (some hours not read yet) are hollow, whole ones filled.
    const symbols = points.map((p) => (p.complete === false ? "circle-open" : "circle"));
    const trace = {
      x, y, customdata: info, type: "scatter", mode: "lines+markers",
      marker: { size: level === 1 ? 4 : 7, symbol: symbols, line: { width: 2, color: "#2563eb" } },
      line: { width: 2, color: "#2563eb" },
      connectgaps: false, name: metric.name,
      hovertemplate: "%{x|%Y-%m-%d %H:%M} UTC<br>%{y} " + metric.unit +
        "<br>%{customdata[0]} requests<br>%{customdata[1]}<extra></extra>",
    };
    // The axes fit the data drawn, after every change and every refresh: x spans the period
    // asked for (sensible ticks even for one point), y the values. A zoom the user made is kept
    // only while the data set (biller, metric, period) stays the same.
    const dataSet = [series.biller, metric.id, level, series.period].join("|");
    const zoomed = zooms[level] === dataSet;
    const layout = {
      margin: { l: 60, r: 20, t: 10, b: 40 },
      xaxis: { type: "date", automargin: true },
      yaxis: { title: { text: metric.unit }, rangemode: "tozero" },
      showlegend: false,
      uirevision: dataSet,
    };
    if (!zoomed) {
      layout.xaxis.range = [series.from.replace("Z", ""), series.to.replace("Z", "")];
      layout.xaxis.autorange = false;
      layout.yaxis.autorange = true;
    }
    if (level >= 2) layout.xaxis.tickformat = "%b %d";
    const levelName = (dashboard.levelNames || {})[level] || "";
    const partial = series.points.filter((p) => p.complete === false).length;
    const newest = newestHour(level, series.points);
    const asOf = newest
      ? " · as of " + newest.toISOString().replace("T", " ").slice(0, 16) + " UTC"
      : " · no data in this period";
    el("caption-" + level).textContent = levelName + " · " + metric.name + " (" + metric.unit + ")" +
      asOf + (partial ? " · " + partial + " partial (hollow)" : "");
    dashboard.coverage[level] = {
      points: series.points.length,
      partial,
      asOf: newest ? newest.toISOString() : null,
    };
    const chart = el("chart-" + level);
    Plotly.react(chart, [trace], layout, { displaylogo: false, responsive: true });
    if (!chart.dataset.zoomWatch) {
      chart.dataset.zoomWatch = "yes";
      // A user's zoom or pan (not the reset of "autoscale") belongs to the data set drawn now.
      chart.on("plotly_relayout", (event) => {
        const reset = event["xaxis.autorange"] || event["yaxis.autorange"];
        const moved = Object.keys(event).some((k) => k.endsWith(".range[0]") || k.endsWith(".range"));
        if (reset) zooms[level] = null;
        else if (moved) zooms[level] = chart.dataset.dataSet;
      });
    }
    chart.dataset.dataSet = dataSet;
  }

  // The biller's objectives: per objective its target, the 30-day budget left and the burn
  // rates of the page and ticket windows; the state words are the server's.
  const STATE_CLASS = { page: "state-page", ticket: "state-warning", ok: "state-ok" };
  const percent = (share) => (share == null ? "no data" : (100 * share).toFixed(1) + " %");
  const burn = (rate) => (rate == null ? "unknown" : rate.toFixed(1) + "x");

  function objectiveCells(name, target, part) {
    const alerts = Object.fromEntries((part.alerts || []).map((a) => [a.name, a]));
    const gated = (a) => (a && a.gated ? " (too few requests)" : "");
    if (part.objectiveMs !== undefined) {
      const p95 = part.p95Ms == null ? "unknown" : part.p95Ms + " ms";
      return [name, target, "-", p95 + " in the hour", part.hoursOver + " of " + part.hoursRead +
        " hours over", part.state];
    }
    return [
      name,
      target,
      percent(part.budgetRemaining),
      burn(alerts.page && alerts.page.longBurn) + gated(alerts.page),
      burn(alerts.ticket && alerts.ticket.longBurn) + gated(alerts.ticket),
      part.state,
    ];
  }

  function drawObjectives(body) {
    dashboard.objectives = body;
    const state = el("objectives-state");
    state.textContent = body ? body.state : "no data";
    state.className = (body && STATE_CLASS[body.state]) || "muted";
    el("objectives-why").textContent = body ? body.why : "no data for this biller";
    const rows = [];
    if (body && body.objectives) {
      const o = body.objectives;
      if (body.errorRate) rows.push(objectiveCells("Error rate", percent(o.errorRate), body.errorRate));
      if (body.timeoutRate) rows.push(objectiveCells("Timeout rate", percent(o.timeoutRate), body.timeoutRate));
      if (body.p95) rows.push(objectiveCells("P95 response time", o.p95Ms + " ms", body.p95));
    }
    const tbody = el("objectives-rows");
    tbody.replaceChildren();
    for (const cells of rows) {
      const tr = document.createElement("tr");
      cells.forEach((text, i) => {
        const td = document.createElement("td");
        td.textContent = text;
        if (i === cells.length - 1) td.className = STATE_CLASS[text] || "muted";
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    }
    el("objectives-table").hidden = rows.length === 0;
  }

  async function fetchObjectives(biller) {
    try {
      return await api("/api/metrics/" + encodeURIComponent(biller) + "/objectives");
    } catch (e) {
      if (e instanceof AuthError) throw e;
      if (e.status === 404) return null;
      throw e;
    }
  }

  // The start of the level's window that contains `time` (UTC days; weeks start on Sunday), so
  // a graph also shows the day or week the period begins in.
  function windowStart(level, time) {
    const t = new Date(time.getTime());
    if (level >= 2) t.setUTCHours(0, 0, 0, 0);
    if (level === 3) t.setUTCDate(t.getUTCDate() - t.getUTCDay());
    return t;
  }

  const zooms = {};
  let busy = false;
  let again = false;
  async function refresh() {
    // A change made while a refresh is in flight is applied as soon as it ends.
    if (busy) {
      again = true;
      return;
    }
    if (typeof Plotly === "undefined") {
      showError("The chart library did not load (is the plotly package installed?).");
      return;
    }
    if (needsToken()) {
      askToken();
      return;
    }
    const biller = el("biller").value;
    const metricId = el("metric").value;
    if (!biller || !metricId) return;
    const metric = dashboard.metricTypes.find((m) => String(m.id) === metricId);
    busy = true;
    again = false;
    try {
      // Hour-aligned range: the same for every viewer within the hour (so the server can reuse
      // its answer) and still ending after the current hour's window starts.
      const hour = 3600000;
      const to = new Date((Math.floor(Date.now() / hour) + 1) * hour);
      const from = new Date(to.getTime() - Number(el("period").value) * 86400000);
      const period = el("period").value;
      const ranges = LEVELS.map((level) => [windowStart(level, from).toISOString(), to.toISOString()]);
      const [objectives, ...all] = await Promise.all([
        fetchObjectives(biller),
        ...LEVELS.map((level, i) => fetchSeries(biller, metricId, level, ranges[i][0], ranges[i][1])),
      ]);
      if (again) return; // the filters changed meanwhile: draw the newer choice instead
      drawObjectives(objectives);
      LEVELS.forEach((level, i) =>
        draw(level, { ...all[i], biller, period, from: ranges[i][0], to: ranges[i][1] }, metric)
      );
      dashboard.refreshes += 1;
      dashboard.lastUpdated = new Date().toISOString();
      el("last-updated").textContent = dashboard.lastUpdated.replace("T", " ").slice(0, 19) + " UTC";
      el("last-updated").dateTime = dashboard.lastUpdated;
      clearError();
    } catch (e) {
      if (e instanceof AuthError) {
        askToken(e.message);
      } else {
        const since = dashboard.lastUpdated ? " (graphs show data as of the last update)" : "";
        showError("Could not load metrics: " + e.message + since);
      }
    } finally {
      busy = false;
      if (again) refresh();
    }
  }

  // Each tick reloads the choices too (keeping the selection), so new billers appear by
  // themselves and a dashboard opened while the API was down recovers.
  async function start() {
    if (needsToken()) {
      askToken();
      return;
    }
    try {
      if (!(await loadChoices())) return;
    } catch (e) {
      if (e instanceof AuthError) askToken(e.message);
      else showError("Could not load the dashboard: " + e.message);
      return;
    }
    await refresh();
  }

  for (const id of ["biller", "metric", "period"]) el(id).addEventListener("change", refresh);
  el("refresh-now").addEventListener("click", refresh);

  setInterval(start, config.refreshSeconds * 1000);
  start();
})();
