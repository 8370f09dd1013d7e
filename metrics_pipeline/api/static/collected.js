// The collected-metrics view: one key's statistic per UTC hour (of all apps, or of one app),
// from /api/collected/<key>/series, refreshed in place every N seconds with fetch().
(function () {
  "use strict";

  const HOUR = 3600000;

  // State visible in the console (and to tests).
  const state = { refreshes: 0, lastError: null, key: null, app: null, hours: 0 };
  window.collectedView = state;

  const { api, el, run } = metricsPage("collected", "Could not load collected metrics: ", state);
  const utc = utcMinutes;

  function options(select, values, labels) {
    const current = select.value;
    select.replaceChildren(
      ...values.map((v, i) => {
        const o = document.createElement("option");
        o.value = v;
        o.textContent = labels ? labels[i] : v;
        return o;
      })
    );
    if (values.includes(current)) select.value = current;
  }

  async function loadKeys() {
    const body = await api("/api/collected/keys");
    const apps = [...new Set(body.series.map((s) => s.app))];
    options(el("app"), ["", ...apps], ["All apps", ...apps]);
    const app = el("app").value;
    const keys = [...new Set(body.series.filter((s) => !app || s.app === app).map((s) => s.key))].sort();
    options(el("key"), keys);
    return keys;
  }

  // Every hour of the range: the value where the series has one, null (a gap) elsewhere.
  function hourly(series, from, to) {
    const byHour = new Map(series.hours.map((h) => [Date.parse(h.start), h]));
    const x = [], y = [], text = [];
    for (let t = from.getTime(); t < to.getTime(); t += HOUR) {
      const h = byHour.get(t);
      x.push(new Date(t).toISOString());
      y.push(h ? h.value : null);
      text.push(h ? h.count + " points" : "no points");
    }
    return { x, y, text };
  }

  function draw(series, from, to) {
    const { x, y, text } = hourly(series, from, to);
    const who = series.app ? "app " + series.app : "all apps";
    Plotly.react(
      el("chart"),
      [{ x, y, text, name: series.stat, mode: "lines+markers", type: "scatter", connectgaps: false, hovertemplate: "%{x}<br>%{y} (%{text})<extra></extra>" }],
      {
        margin: { t: 10, r: 20, b: 40, l: 60 },
        xaxis: { type: "date", range: [from.toISOString(), to.toISOString()], autorange: false },
        yaxis: { title: { text: series.stat } },
      },
      { displaylogo: false, responsive: true }
    );
    el("caption").textContent = series.key + " · hourly " + series.stat + " · " + who;
    el("empty").hidden = series.hours.length > 0;
    el("empty").textContent = "No points of " + series.key + " (" + who + ") from " + utc(from) + " to " + utc(to);
    state.hours = series.hours.length;
  }

  async function load() {
    const keys = await loadKeys();
    const key = el("key").value;
    if (!keys.length || !key) {
      el("caption").textContent = "No collected metrics yet";
      el("empty").hidden = false;
      el("empty").textContent = "No hourly statistics yet: send points to the collector, then wait for the refresh.";
      return;
    }
    const app = el("app").value;
    const to = new Date();
    to.setUTCMinutes(0, 0, 0);
    to.setUTCHours(to.getUTCHours() + 1);
    const from = new Date(to.getTime() - Number(el("period").value) * 24 * HOUR);
    el("caption").textContent = "Loading " + key + "…";
    const query = "?stat=" + encodeURIComponent(el("stat").value) + "&from=" + from.toISOString() + "&to=" + to.toISOString() + (app ? "&app=" + encodeURIComponent(app) : "");
    const series = await api("/api/collected/" + encodeURIComponent(key) + "/series" + query);
    draw(series, from, to);
    state.key = key;
    state.app = app || null;
  }

  run(load, ["app", "key", "stat", "period"]);
})();
