"""The exports page in real headless Chromium: the four queues of the caller's tasks, refreshed
in place as tasks move (the API's clock is injected), and a cancel button that works; the empty
states, the form that starts an export, pages served "N of M", human status words, UTC times
and Cancel only on the tasks still live."""

import math
import re

import httpx

from metrics_pipeline.api import ApiSettings, create_app
from metrics_pipeline.api.exports.service import ExportSettings

from .exports_support import EXPORT, OBJECT, WINDOW, Clock, wait_for
from .helpers import ThreadedServer, free_port, watched_page
from .test_browser import ARTIFACTS, browser  # noqa: F401 - the Chromium fixture

REFRESH_S = 1


def rows(page, queue: str) -> list[str]:
    return page.eval_on_selector_all(
        f"#tasks-{queue} tr", "trs => trs.map(tr => tr.dataset.taskId)"
    )


def test_the_exports_page_lists_the_queues_refreshes_in_place_and_cancels(
    browser,  # noqa: F811
    sqlite_warehouse,
):
    clock = Clock()
    settings = ApiSettings(
        warehouse_url=sqlite_warehouse.url,
        refresh_seconds=REFRESH_S,
        exports=ExportSettings(pages_ahead=0),
    )
    port = free_port()
    server = ThreadedServer(create_app(settings, clock=clock), port)
    server.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            slow = c.get(EXPORT, params={**WINDOW, "pageSize": 10}).headers["export-task-id"]
            done = c.get(EXPORT, params={**WINDOW, "pageSize": 10000}).headers["export-task-id"]
            wait_for(
                lambda: (
                    c.get(f"/api/v2/exports-status/{slow}").json()["status"]
                    == "MAX-REQUESTED-PAGE-REACHED"
                ),
                "the active task to settle",
            )
        page, problems = watched_page(browser, 1400, 900)
        page.goto(f"http://127.0.0.1:{port}/exports")
        page.wait_for_function("() => window.metricsExports.refreshes >= 1", timeout=15_000)
        assert rows(page, "active") == [slow]
        assert rows(page, "completed") == [done]
        assert rows(page, "stale") == [] and rows(page, "draining") == []
        assert page.text_content("#count-active") == "1"
        cells = page.eval_on_selector_all(
            f"tr[data-task-id='{slow}'] td", "tds => tds.map(td => td.textContent)"
        )
        assert cells[1] == "DataPumpErrorAggregation"
        assert cells[4] == "Waiting for the next page to be asked" and cells[5] == "10"
        page.evaluate("window.__sameDocument = 'still here'")

        # Idle for 241 s on the API's clock: the next refresh shows the task as stale.
        clock.advance(241)
        page.wait_for_function(
            "(id) => document.querySelector(`#tasks-stale tr[data-task-id='${id}']`)",
            arg=slow,
            timeout=(REFRESH_S * 3 + 5) * 1000,
        )
        assert rows(page, "active") == []
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "exports.png"), full_page=True)

        page.click(f"tr[data-task-id='{slow}'] button.cancel")
        page.wait_for_function(
            "(id) => document.querySelector(`#tasks-draining tr[data-task-id='${id}']`)",
            arg=slow,
            timeout=(REFRESH_S * 3 + 5) * 1000,
        )
        status = page.eval_on_selector(
            f"#tasks-draining tr[data-task-id='{slow}'] td:nth-child(5)", "td => td.textContent"
        )
        assert status == "Cancelled"
        assert page.evaluate("window.metricsExports.canceled") == [slow]
        assert page.evaluate("window.__sameDocument") == "still here"  # never reloaded
        assert rows(page, "completed") == [done]
        assert problems == [], problems  # no script errors, no CSP violations
    finally:
        server.stop()


def cells_of(page, task_id: str) -> list[str]:
    return page.eval_on_selector_all(
        f"tr[data-task-id='{task_id}'] td", "tds => tds.map(td => td.textContent)"
    )


def test_the_exports_page_says_empty_starts_exports_and_words_the_tasks(
    browser,  # noqa: F811
    sqlite_warehouse,
):
    settings = ApiSettings(warehouse_url=sqlite_warehouse.url, refresh_seconds=REFRESH_S)
    port = free_port()
    server = ThreadedServer(create_app(settings, clock=Clock()), port)
    server.start()
    try:
        page, problems = watched_page(browser, 1400, 900)
        page.goto(f"http://127.0.0.1:{port}/exports")
        page.wait_for_function("() => window.metricsExports.refreshes >= 1", timeout=15_000)
        # No tasks: words, never an empty table.
        assert page.is_visible("#empty-completed")
        assert page.text_content("#empty-completed") == "No finished exports"
        assert page.text_content("#empty-active") == "No exports being read"
        assert not page.is_visible("#queue-completed table")

        # The form starts an export; the new task appears without a reload.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            total = c.get(EXPORT, params={**WINDOW, "pageSize": 10000}).json()["rowCount"]
        page.select_option("#export-object", OBJECT)
        page.fill("#export-from", WINDOW["fromDate"])
        page.fill("#export-to", WINDOW["toDate"])
        page.fill("#export-page-size", str(math.ceil(total / 3)))
        page.click("#export-submit")
        page.wait_for_function("() => window.metricsExports.started.length === 1")
        started = page.evaluate("window.metricsExports.started[0]")
        assert "page 1 has" in page.text_content("#export-result")
        # Fetch-ahead reads pages 2 and 3: all pages read, 1 of 3 served, not "completed".
        page.wait_for_function(
            "(id) => document.querySelector(`#tasks-completed tr[data-task-id='${id}']`)",
            arg=started,
            timeout=(REFRESH_S * 5 + 10) * 1000,
        )
        cells = cells_of(page, started)
        assert cells[6] == "1 of 3"
        assert cells[4] == "All pages read, 1 of 3 served"
        assert "COMPLETED" not in cells[4].upper()
        assert page.is_visible(f"tr[data-task-id='{started}'] button.cancel")

        assert page.text_content("#queue-completed thead").count("Pages served") == 1
        assert "Last page" not in page.text_content("#queues")
        # The one-page export: every page served, finished, so no Cancel button.
        rows_done = [t for t in rows(page, "completed") if t != started]
        assert len(rows_done) == 1
        done = cells_of(page, rows_done[0])
        assert done[4] == "Completed: every page served" and done[6] == "1 of 1"
        assert done[2:4] == ["2025-03-01 00:00 UTC", "2025-03-10 00:00 UTC"]
        assert page.query_selector(f"tr[data-task-id='{rows_done[0]}'] button") is None
        # Times in UTC with the zone and no microseconds.
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", done[7]), done[7]
        assert "MAX-REQUESTED" not in page.text_content("#queues")

        # A cancelled task shows no Cancel button either.
        page.click(f"tr[data-task-id='{started}'] button.cancel")
        page.wait_for_function(
            "(id) => document.querySelector(`#tasks-draining tr[data-task-id='${id}']`)",
            arg=started,
            timeout=(REFRESH_S * 3 + 5) * 1000,
        )
        assert page.query_selector(f"tr[data-task-id='{started}'] button") is None

        # A refused export shows its reason in the page.
        page.fill("#export-from", WINDOW["toDate"])
        page.fill("#export-to", WINDOW["fromDate"])
        page.click("#export-submit")
        page.wait_for_selector("#export-result.form-error")
        assert "did not start" in page.text_content("#export-result")
        assert "fromDate" in page.text_content("#export-result")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "exports-form.png"), full_page=True)
        assert [p for p in problems if "400" not in p] == [], problems
    finally:
        server.stop()
