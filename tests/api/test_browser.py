"""The dashboard in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

The API runs in uvicorn on a free port over a SQLite warehouse with recent rows. The test logs
in with a portal token, sees the three graphs drawn from the warehouse, inserts a newer aggregate
row, and sees the hourly graph take it on the next timer tick with no page reload; then it stops
the API and sees the error message. A screenshot is kept in test-artifacts/.
"""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from metrics_pipeline.api import ApiSettings, create_app
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import DAILY, HOURLY, WEEKLY, Partial, Sketch
from metrics_pipeline.web.auth import token_digest

from .helpers import ThreadedServer, free_port, watched_page

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
BILLER, OTHER = 21, 22
TOKEN = "browser-test-portal-token"
REFRESH_S = 2


def partial(requests: int, avg_ms: str, covered: int = 1, expected: int = 1) -> Partial:
    total = Decimal(avg_ms) * requests
    p = Partial(requests, 1, 0, requests, total, Sketch(), {50: None, 95: None, 99: None})
    p.covered_hours, p.expected_hours = covered, expected
    return p


@pytest.fixture
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (Debian's chromium; `make test-deps` installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


def chart(page, level: int) -> dict:
    return page.evaluate(
        """(id) => { const gd = document.getElementById(id);
                     const t = gd && gd.data && gd.data[0];
                     return t ? {x: Array.from(t.x), y: Array.from(t.y),
                                 symbols: Array.from(t.marker.symbol),
                                 info: Array.from(t.customdata).map((c) => c[1])} : null; }""",
        f"chart-{level}",
    )


def test_the_dashboard_draws_the_warehouse_and_refreshes_in_place(browser, tmp_path):
    now = datetime.now(UTC).replace(tzinfo=None)
    current_hour = now.replace(minute=0, second=0, microsecond=0)
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    warehouse = WarehouseResource(url=url)
    hours = [current_hour - timedelta(hours=h) for h in range(48, 0, -1)]
    warehouse.write_partials(
        HOURLY,
        {
            (b, h): partial(100 + i, f"{120 + i % 7}.25")
            for b in (BILLER, OTHER)
            for i, h in enumerate(hours)
        },
    )
    # Daily and weekly rows over 20 days: more than the default 14-day period shows.
    days = [current_hour - timedelta(hours=h) for h in range(20 * 24, 0, -1)]
    hours_of = {DAILY: 24, WEEKLY: 168}
    for level in (DAILY, WEEKLY):
        starts = sorted({level.window(h)[0] for h in days})
        warehouse.write_partials(
            level,
            {
                (BILLER, s): partial(2400, "131.50", hours_of[level], hours_of[level])
                for s in starts
            },
        )
    # One day holds 20 of its 24 hours (a busy shard); another has no row at all (a gap).
    day_starts = sorted({DAILY.window(h)[0] for h in days})
    partial_day, missing_day = day_starts[-5], day_starts[-8]
    warehouse.write_partials(DAILY, {(BILLER, partial_day): partial(2000, "131.50", 20, 24)})
    with warehouse.engine().begin() as conn:
        for table in warehouse.tables.aggregates.values():
            conn.execute(
                table.delete().where(
                    (table.c.TimeStampTypeId == DAILY.id) & (table.c.StartTime == missing_day)
                )
            )
    # The period ends with the current hour; each graph starts with the window (day, week)
    # the period begins in.
    period_start = current_hour + timedelta(hours=1) - timedelta(days=14)

    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps([{"name": "portal", "sha256": token_digest(TOKEN), "billers": [BILLER]}])
    )
    settings = ApiSettings(warehouse_url=url, tokens_file=str(tokens), refresh_seconds=REFRESH_S)
    port = free_port()
    server = ThreadedServer(create_app(settings), port)
    server.start()
    try:
        page, problems = watched_page(browser, 1280, 1100)
        page.goto(f"http://127.0.0.1:{port}/")

        # Asked for a token; a wrong one is refused in words and asked for again.
        page.wait_for_selector("#token-form:not([hidden])", timeout=10_000)
        page.fill("#token", "not-the-token")
        page.click("#token-form button[type=submit]")
        page.wait_for_function(
            "() => (document.getElementById('error').textContent || '').includes('refused')",
            timeout=10_000,
        )
        page.wait_for_selector("#token-form:not([hidden])", timeout=10_000)
        assert page.evaluate("sessionStorage.getItem('metricsApiToken')") is None
        problems.clear()  # the browser logs the refused request (401) as a console error
        # The right one is kept in sessionStorage for the tab.
        page.fill("#token", TOKEN)
        page.click("#token-form button[type=submit]")
        page.wait_for_function(
            "() => window.metricsDashboard && window.metricsDashboard.refreshes >= 1",
            timeout=15_000,
        )
        assert page.evaluate("sessionStorage.getItem('metricsApiToken')") == TOKEN
        assert page.eval_on_selector_all("#biller option", "os => os.map(o => o.value)") == [
            str(BILLER)
        ]  # the portal token sees only its biller
        assert page.input_value("#metric") == "1"

        hourly = chart(page, 1)
        assert len(hourly["x"]) == 48
        assert hourly["x"][-1] == (current_hour - timedelta(hours=1)).isoformat()
        assert hourly["y"][0] == 120.25  # the warehouse's AvgResponseTime of the first hour
        assert hourly["x"][0] == hours[0].isoformat()  # 48 hours: all inside the period
        daily, weekly = chart(page, 2), chart(page, 3)
        assert set(daily["y"]) == {131.5, None} and set(weekly["y"]) == {131.5}
        # The missing day is a break in the line, never a zero; the partial day is hollow and
        # says how much it holds.
        gap = daily["x"].index(missing_day.isoformat())
        assert daily["y"][gap] is None and daily["info"][gap] == "no data"
        at = daily["x"].index(partial_day.isoformat())
        assert daily["symbols"][at] == "circle-open"
        assert daily["info"][at] == "partial: 20 of 24 hours"
        assert {sym for i, sym in enumerate(daily["symbols"]) if i not in (at, gap)} == {"circle"}
        assert page.evaluate("window.metricsDashboard.coverage[2].partial") == 1
        assert "1 partial (hollow)" in page.text_content("#caption-2")
        assert "partial" not in page.text_content("#caption-3")
        assert daily["x"][0] == DAILY.window(period_start)[0].isoformat()
        assert weekly["x"][0] == WEEKLY.window(period_start)[0].isoformat()
        # The last day with a row: the last closed hour's (at 00:xx UTC the day before).
        assert daily["x"][-1] == DAILY.window(current_hour - timedelta(hours=1))[0].isoformat()
        assert page.text_content("#last-updated") != "never"
        assert page.is_hidden("#error")

        page.evaluate("window.__sameDocument = 'still here'")
        loaded_at = page.evaluate("window.metricsDashboard.loadedAt")
        refreshes = page.evaluate("window.metricsDashboard.refreshes")
        first_update = page.text_content("#last-updated")

        # A newer aggregate lands in the warehouse.
        warehouse.write_partials(HOURLY, {(BILLER, current_hour): partial(500, "999.99")})
        page.wait_for_function(
            """([hour]) => { const t = document.getElementById('chart-1').data[0];
                             return t.x[t.x.length - 1] === hour && t.y[t.y.length - 1] === 999.99; }""",
            arg=[current_hour.isoformat()],
            timeout=(REFRESH_S * 3 + 5) * 1000,
        )
        assert page.evaluate("window.__sameDocument") == "still here"  # no reload
        assert page.evaluate("window.metricsDashboard.loadedAt") == loaded_at
        assert page.evaluate("window.metricsDashboard.refreshes") > refreshes
        assert len(chart(page, 1)["x"]) == 49
        page.wait_for_function(
            "(before) => document.getElementById('last-updated').textContent !== before",
            arg=first_update,
            timeout=(REFRESH_S * 2 + 5) * 1000,
        )
        # Each graph says how fresh it is: the newest hour its data holds.
        assert page.text_content("#caption-1") == (
            f"Hourly · AvgResponseTime (ms) · as of {current_hour:%Y-%m-%d %H:%M} UTC"
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.wait_for_timeout(500)  # let the transition finish before the picture
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        assert problems == [], problems  # no script errors, no CSP violations

        # The API goes away: the graphs stay and a clear message says so.
        server.stop()
        page.wait_for_selector("#error:not([hidden])", timeout=(REFRESH_S * 3 + 5) * 1000)
        assert "Could not load" in page.text_content("#error")
        assert len(chart(page, 1)["x"]) == 49
        page.screenshot(path=str(ARTIFACTS / "dashboard-api-down.png"), full_page=True)
    finally:
        server.stop()
        warehouse._engines.dispose()


def axis_fits(page, level: int) -> bool:
    """Every drawn point lies inside the chart's y axis (and the x axis holds the x values)."""
    return page.evaluate(
        """(id) => { const gd = document.getElementById(id);
                     const ys = gd.data[0].y.filter((v) => v !== null);
                     const [lo, hi] = gd._fullLayout.yaxis.range;
                     const xs = gd.data[0].x.map((x) => Date.parse(x + 'Z'));
                     const [xa, xb] = gd._fullLayout.xaxis.range.map((x) => Date.parse(x + 'Z'));
                     return ys.every((v) => v >= lo && v <= hi)
                         && xs.every((x) => x >= xa && x <= xb); }""",
        f"chart-{level}",
    )


def test_axes_fit_every_biller_and_filter_changes_during_a_refresh_apply(browser, tmp_path):
    now = datetime.now(UTC).replace(tzinfo=None)
    current_hour = now.replace(minute=0, second=0, microsecond=0)
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    warehouse = WarehouseResource(url=url)
    hours = [current_hour - timedelta(hours=h) for h in range(30, 0, -1)]
    small, large, single = 31, 32, 33
    warehouse.write_partials(
        HOURLY,
        {
            **{(small, h): partial(100, f"{100 + i}.00") for i, h in enumerate(hours)},
            **{(large, h): partial(100, f"{5000 + 10 * i}.00") for i, h in enumerate(hours)},
        },
    )
    for biller, avg in ((small, "120.00"), (large, "5120.00")):
        warehouse.write_partials(
            DAILY, {(biller, DAILY.floor(h)): partial(2400, avg, 24, 24) for h in hours}
        )
    # A biller whose weekly graph has one point.
    week = WEEKLY.floor(current_hour)
    warehouse.write_partials(WEEKLY, {(single, week): partial(9000, "77.00", 40, 168)})
    settings = ApiSettings(warehouse_url=url, refresh_seconds=3600)  # ticks only on demand
    port = free_port()
    server = ThreadedServer(create_app(settings), port)
    server.start()
    try:
        page, problems = watched_page(browser, 1280, 1100)
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("() => window.metricsDashboard.refreshes >= 1", timeout=15_000)
        assert page.input_value("#biller") == str(small)
        assert axis_fits(page, 1) and axis_fits(page, 2)

        # Switch to a biller fifty times larger: the axes follow the data.
        done = page.evaluate("window.metricsDashboard.refreshes")
        page.select_option("#biller", str(large))
        page.wait_for_function(
            "(n) => window.metricsDashboard.refreshes > n", arg=done, timeout=15_000
        )
        assert max(v for v in chart(page, 1)["y"] if v is not None) >= 5000
        assert axis_fits(page, 1) and axis_fits(page, 2)

        # A filter change while a refresh is in flight is applied when it ends.
        page.route(
            "**/api/metrics/**",
            lambda route: (page.wait_for_timeout(800), route.continue_()),
        )
        done = page.evaluate("window.metricsDashboard.refreshes")
        page.click("#refresh-now")
        page.wait_for_timeout(200)  # the refresh is waiting for its answers now
        page.select_option("#period", "1")
        page.wait_for_function(
            "(n) => window.metricsDashboard.refreshes > n", arg=done, timeout=20_000
        )
        page.unroute("**/api/metrics/**")
        span = page.evaluate(
            """() => { const r = document.getElementById('chart-1')._fullLayout.xaxis.range;
                       return (Date.parse(r[1] + 'Z') - Date.parse(r[0] + 'Z')) / 3600000; }"""
        )
        assert span == 24, span  # "Last 24 hours", not the 14 days in flight before
        # The rows' last 23 hours fall inside it (the running hour has no row).
        assert len(chart(page, 1)["x"]) == 23 and axis_fits(page, 1)

        # One weekly point: ticks are dates, not fractions of a second.
        done = page.evaluate("window.metricsDashboard.refreshes")
        page.select_option("#period", "14")
        page.wait_for_function(
            "(n) => window.metricsDashboard.refreshes > n", arg=done, timeout=15_000
        )
        done = page.evaluate("window.metricsDashboard.refreshes")
        page.select_option("#biller", str(single))
        page.wait_for_function(
            "(n) => window.metricsDashboard.refreshes > n", arg=done, timeout=15_000
        )
        assert len(chart(page, 3)["x"]) == 1 and axis_fits(page, 3)
        ticks = page.eval_on_selector_all(
            "#chart-3 .xtick text", "ts => ts.map(t => t.textContent)"
        )
        assert ticks and not any(":" in t for t in ticks), ticks
        assert "partial (hollow)" in page.text_content("#caption-3")
        assert problems == [], problems
    finally:
        server.stop()
        warehouse._engines.dispose()


def test_the_dashboard_shows_each_billers_error_budget_and_burn_state(browser, tmp_path):
    from metrics_pipeline.datapump.objectives import validate, write_objectives
    from tests.datapump.test_objectives import write_hours

    from .helpers import browser_page

    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    current_hour = datetime.now(UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    last = current_hour - timedelta(hours=1)
    rows = []
    for h in range(6):
        hour = last - timedelta(hours=h)
        # Biller 21 fails 20 % of its calls in the last whole hour (a page at 1 %).
        rows.append((BILLER, hour, 1000, 200 if hour == last else 5, 1, 300.0, 1))
        rows.append((OTHER, hour, 1000, 5, 1, 300.0, 1))
    write_hours(url, rows)
    write_objectives(WarehouseResource(url=url), [validate(BILLER, 0.01, 0.01, 800)])
    app = create_app(ApiSettings(warehouse_url=url, refresh_seconds=60))
    with browser_page(browser, app, "/") as (page, problems):
        page.wait_for_function(
            "() => (document.getElementById('objectives-state').textContent || '') === 'page'",
            timeout=15_000,
        )
        assert "state-page" in page.get_attribute("#objectives-state", "class")
        assert "error rate burns the 30-day budget 20.0x over 1h" in page.inner_text(
            "#objectives-why"
        )
        cells = page.eval_on_selector_all(
            "#objectives-rows tr",
            "(rows) => rows.map((r) => Array.from(r.children).map((c) => c.textContent))",
        )
        # 225 failed of 6,000 calls against 1 %: the 30-day budget is overspent 2.75 times.
        assert cells[0] == ["Error rate", "1.0 %", "-275.0 %", "20.0x", "3.8x", "page"]
        assert cells[1][0] == "Timeout rate" and cells[1][-1] == "ok"
        assert cells[2] == [
            "P95 response time",
            "800 ms",
            "-",
            "300 ms in the hour",
            "0 of 6 hours over",
            "ok",
        ]
        # Another biller, without objectives, says so instead of a budget.
        page.select_option("#biller", str(OTHER))
        page.wait_for_function(
            "() => document.getElementById('objectives-state').textContent === 'no objective'",
            timeout=15_000,
        )
        assert page.is_hidden("#objectives-table")
        assert "no BillerObjective row" in page.inner_text("#objectives-why")
        assert problems == []
