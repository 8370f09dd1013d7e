// The exports page: the four queues of /api/v2/exports-status, refreshed in place every N
// seconds with fetch() (the page is never reloaded), and a cancel button per live task.
(function () {
  "use strict";

  const root = document.getElementById("exports");
  const config = {
    refreshSeconds: Number(root.dataset.refreshSeconds) || 60,
    authRequired: root.dataset.authRequired === "true",
  };
  const QUEUES = ["active", "stale", "completed", "draining"];
  const CANCELABLE = new Set(["active", "stale", "completed"]);
  const el = (id) => document.getElementById(id);

  // State visible in the console (and to the browser test).
  const state = { refreshes: 0, lastUpdated: null, lastError: null, canceled: [] };
  window.metricsExports = state;

  const { api, askToken, needsToken, AuthError } = metricsApiClient({
    authRequired: config.authRequired,
    showError,
    onToken: refresh,
  });

  function showError(message) {
    state.lastError = message;
    el("error").textContent = message;
    el("error").hidden = false;
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (className) td.className = className;
    return td;
  }

  function row(queue, task) {
    const tr = document.createElement("tr");
    tr.dataset.taskId = task.task_id;
    const params = task.query_config.filter_params;
    tr.append(
      cell(task.task_id.slice(0, 12)),
      cell(task.query_config.object_name),
      cell(params.fromDate),
      cell(params.toDate),
      cell(task.status),
      cell(task.accumulate, "num"),
      cell(task.metric, "num"),
      cell(task.activity_tracker.initiated_time),
      cell(task.activity_tracker.elapsed_time.split(".")[0]),
    );
    const actions = document.createElement("td");
    if (CANCELABLE.has(queue) && task.status !== "CANCELED") {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "cancel";
      button.textContent = "Cancel";
      button.addEventListener("click", () => cancel(task.task_id, button));
      actions.append(button);
    }
    tr.append(actions);
    return tr;
  }

  function render(queues) {
    for (const queue of QUEUES) {
      const tasks = queues[queue] || [];
      el("count-" + queue).textContent = String(tasks.length);
      el("tasks-" + queue).replaceChildren(...tasks.map((task) => row(queue, task)));
    }
  }

  async function refresh() {
    if (needsToken()) {
      askToken();
      return;
    }
    try {
      render(await api("/api/v2/exports-status"));
      state.refreshes += 1;
      state.lastUpdated = new Date().toISOString();
      state.lastError = null;
      el("last-updated").textContent = state.lastUpdated.replace("T", " ").slice(0, 19);
      el("error").hidden = true;
    } catch (e) {
      if (e instanceof AuthError) askToken(e.message);
      else showError("Refresh failed: " + e.message + " (the lists show the last data)");
    }
  }

  async function cancel(taskId, button) {
    button.disabled = true;
    try {
      await api("/api/v2/exports-status/" + encodeURIComponent(taskId), "DELETE");
      state.canceled.push(taskId);
    } catch (e) {
      showError("Cancel failed: " + e.message);
    }
    await refresh();
  }

  el("refresh-now").addEventListener("click", refresh);

  refresh();
  setInterval(refresh, config.refreshSeconds * 1000);
})();
