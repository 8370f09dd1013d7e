"""The exports page in real headless Chromium: the four queues of the caller's tasks, refreshed
in place as tasks move (the API's clock is injected), and a cancel button that works."""

import httpx

from metrics_pipeline.api import ApiSettings, create_app
from metrics_pipeline.api.exports.service import ExportSettings

from .exports_support import EXPORT, WINDOW, Clock, wait_for
from .helpers import ThreadedServer, free_port
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
    problems: list[str] = []
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
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
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
        assert cells[4] == "MAX-REQUESTED-PAGE-REACHED" and cells[5] == "10"
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
        assert status == "CANCELED"
        assert page.evaluate("window.metricsExports.canceled") == [slow]
        assert page.evaluate("window.__sameDocument") == "still here"  # never reloaded
        assert rows(page, "completed") == [done]
        assert problems == [], problems  # no script errors, no CSP violations
    finally:
        server.stop()
