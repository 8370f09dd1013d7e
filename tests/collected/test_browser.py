"""The collected-metrics view in real headless Chromium (Playwright on Debian's chromium): apps
and keys listed from the statistics, one app's hourly statistic drawn with a gap for an hour
without points, the all-apps figure by default, an unknown range in words."""

from datetime import timedelta

from metrics_pipeline.api import ApiSettings, create_app
from metrics_pipeline.clock import utc_now
from metrics_pipeline.collected.rules import hour_start, hour_stats
from tests.api.helpers import browser_page
from tests.api.test_browser import browser  # noqa: F401 - the Chromium fixture

from .conftest import sqlite_store
from .test_sql import rows


def trace(page):
    return page.evaluate(
        """() => { const t = document.getElementById('chart').data[0];
                   return {x: Array.from(t.x), y: Array.from(t.y)}; }"""
    )


def test_the_collected_view_draws_one_app_or_all(browser, tmp_path):  # noqa: F811
    store = sqlite_store(tmp_path)
    now = hour_start(utc_now())
    values = {"web": [1.0, 3.0], "api": [10.0, 20.0, 30.0]}
    hours = [now - timedelta(hours=5), now - timedelta(hours=3)]  # hour -4: a gap
    for app, vs in values.items():
        for h in hours:
            store.insert_points(
                rows([(f"{app}/{h:%H}-{i}", "rt", v, h) for i, v in enumerate(vs)], app=app)
            )
    store.write_hours(hours)
    app = create_app(ApiSettings(warehouse_url=store.url))
    with browser_page(browser, app, "/collected", (1280, 900)) as (page, problems):
        page.wait_for_function(
            "() => window.collectedView && window.collectedView.refreshes >= 1", timeout=20_000
        )
        assert page.eval_on_selector_all("#app option", "os => os.map(o => o.value)") == [
            "",
            "api",
            "web",
        ]
        every = trace(page)
        assert len(every["x"]) == 24
        known = [y for y in every["y"] if y is not None]
        assert known == [hour_stats(values["web"] + values["api"]).average] * 2
        # The last 24 hours up to the running one: hour -4 has no points, a gap, not a zero.
        assert every["y"][-6] is not None and every["y"][-5] is None and every["y"][-4] is not None
        page.select_option("#app", "web")
        page.wait_for_function("() => window.collectedView.app === 'web'", timeout=10_000)
        page.select_option("#stat", "max")
        page.wait_for_function(
            "() => document.getElementById('caption').textContent.includes('max')", timeout=10_000
        )
        assert [y for y in trace(page)["y"] if y is not None] == [3.0, 3.0]
        assert page.text_content("#caption") == "rt · hourly max · app web"
        assert page.is_hidden("#empty") and page.is_hidden("#error")
        assert not problems, problems
    store.engine.dispose()
