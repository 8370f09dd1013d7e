// The exports page: a form starting an export (its first page, GET /api/v2/exports/{table}),
// the four queues of /api/v2/exports-status, refreshed in place every N seconds with fetch()
// (the page is never reloaded), in human words, and a cancel button on the tasks still live.
(function () {
  "use strict";

  const root = document.getElementById("exports");
  const config = {
    refreshSeconds: Number(root.dataset.refreshSeconds) || 60,
    authRequired: root.dataset.authRequired === "true",
  };
  const QUEUES = ["active", "stale", "completed", "draining"];
  const EMPTY = {
    active: "No exports being read",
    stale: "No idle exports",
    completed: "No finished exports",
    draining: "No exports closing",
  };
  // The seed's event names, as a reader would say them.
  const WORDS = {
    "ADDED-TO-QUEUE": "Queued",
    "META-DATA-SCANNED": "Preparing",
    "MAX-REQUESTED-PAGE-REACHED": "Waiting for the next page to be asked",
    "NO-RECORD-FOUND": "No rows in this range",
    "END-OF-QUERY_REACHED": "All pages read",
    CANCELED: "Cancelled",
  };
  const el = (id) => document.getElementById(id);

  // State visible in the console (and to the browser test).
  const state = { refreshes: 0, lastUpdated: null, lastError: null, canceled: [], started: [] };
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

  // "2026-12-01 10:00:00.123456" (UTC) -> "2026-12-01 10:00:00 UTC".
  function utc(stamp) {
    return stamp ? String(stamp).replace("T", " ").slice(0, 19) + " UTC" : "";
  }

  // The range as asked, "2025-03-01T00:00:00Z" -> "2025-03-01 00:00 UTC".
  function utcMinute(stamp) {
    return stamp ? String(stamp).replace("T", " ").replace("Z", "").slice(0, 16) + " UTC" : "";
  }

  function allRead(task) {
    return task.pages_total !== null && task.pages_total !== undefined;
  }

  function pagesServed(task) {
    if (allRead(task)) return task.pages_served + " of " + task.pages_total;
    return task.pages_served + " of ? (end not reached yet)";
  }

  function statusWords(queue, task) {
    const status = task.status || "";
    if (status === "CANCELED") return "Cancelled";
    if (allRead(task) && status === "COMPLETED") {
      return task.pages_served >= task.pages_total
        ? "Completed: every page served"
        : "All pages read, " + task.pages_served + " of " + task.pages_total + " served";
    }
    let m = /^SCANNING-PAGE-\((\d+)\)$/.exec(status);
    let words = m ? "Reading page " + m[1] : null;
    m = /^COMMITING-PAGE-\((\d+)\)$/.exec(status);
    if (m) words = "Page " + m[1] + " read";
    words = words || WORDS[status] || status.toLowerCase().replace(/[-_]/g, " ");
    if (queue === "stale") return "Idle: " + words;
    if (queue === "draining") return "Closing: " + words;
    return words;
  }

  // Cancel only what still holds pages to serve: not a cancelled, closing or fully served task.
  function cancelable(queue, task) {
    if (task.status === "CANCELED" || queue === "draining") return false;
    if (queue === "completed") return allRead(task) && task.pages_served < task.pages_total;
    return true;
  }

  function row(queue, task) {
    const tr = document.createElement("tr");
    tr.dataset.taskId = task.task_id;
    const params = task.query_config.filter_params;
    tr.append(
      cell(task.task_id.slice(0, 12)),
      cell(task.query_config.object_name),
      cell(utcMinute(params.fromDate), "time"),
      cell(utcMinute(params.toDate), "time"),
      cell(statusWords(queue, task), "status"),
      cell(task.accumulate, "num"),
      cell(pagesServed(task), "pages"),
      cell(utc(task.activity_tracker.initiated_time), "time"),
      cell(task.activity_tracker.elapsed_time.split(".")[0]),
    );
    const actions = document.createElement("td");
    if (cancelable(queue, task)) {
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
      const body = el("tasks-" + queue);
      body.replaceChildren(...tasks.map((task) => row(queue, task)));
      body.closest("table").hidden = tasks.length === 0;
      el("empty-" + queue).textContent = EMPTY[queue];
      el("empty-" + queue).hidden = tasks.length > 0;
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
      el("last-updated").textContent = state.lastUpdated.replace("T", " ").slice(0, 19) + " UTC";
      el("error").hidden = true;
    } catch (e) {
      if (e instanceof AuthError) askToken(e.message);
      else showError("Refresh failed: " + e.message + " (the lists show the last data)");
      for (const queue of QUEUES) {
        if (el("empty-" + queue).textContent === "Loading…") {
          el("empty-" + queue).textContent = "Could not load the exports";
        }
      }
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

  async function startExport(event) {
    event.preventDefault();
    const table = el("export-object").value;
    const query = new URLSearchParams({
      fromDate: el("export-from").value,
      toDate: el("export-to").value,
      pageSize: el("export-page-size").value,
    });
    el("export-submit").disabled = true;
    el("export-result").textContent = "Starting…";
    try {
      const first = await api("/api/v2/exports/" + encodeURIComponent(table) + "?" + query);
      state.started.push(first.taskId);
      el("export-result").className = "muted";
      el("export-result").textContent =
        "Started " + first.taskId.slice(0, 12) + ": page 1 has " + first.rowCount + " rows" +
        (first.continuationToken ? ", more pages follow." : ", the only page.");
    } catch (e) {
      // Shown beside the form: the refreshes' own error line would hide it on their next success.
      el("export-result").className = "form-error";
      el("export-result").textContent = "The export did not start: " + e.message;
      if (e instanceof AuthError) askToken(e.message);
    }
    el("export-submit").disabled = false;
    await refresh();
  }

  el("start-export").addEventListener("submit", startExport);
  el("refresh-now").addEventListener("click", refresh);

  refresh();
  setInterval(refresh, config.refreshSeconds * 1000);
})();
