"""The availability view in real headless Chromium (Debian's chromium, driven by Playwright):
scenario selector filled from the Scenario table, availability and budget graphs drawn from the
warehouse, a late file counted by a refresh shows up on the next timer tick without a reload."""

from datetime import UTC, datetime, timedelta

from metrics_pipeline.api import ApiSettings, create_app
from metrics_pipeline.availability import demo, pipeline
from tests.api.helpers import ThreadedServer, free_port
from tests.api.test_browser import ARTIFACTS, browser  # noqa: F401 - the Chromium fixture
from tests.availability import events as ev

REFRESH_S = 2


def chart(page, name: str):
    return page.evaluate(
        """(id) => { const gd = document.getElementById(id);
                     const t = gd && gd.data && gd.data[0];
                     return t ? {x: Array.from(t.x), y: Array.from(t.y)} : null; }""",
        f"chart-{name}",
    )


def test_the_availability_view_draws_and_refreshes_in_place(browser, tmp_path):  # noqa: F811
    now = datetime.now(UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    end = now + timedelta(hours=1)
    env = {
        "METRICS_DATA_DIR": str(tmp_path / "data"),
        "METRICS_EVENTS_ROOT": str(tmp_path / "events"),
    }
    demo.create_availability_demo(env, end - timedelta(hours=1), days=2, seed=5, scale=0.2)
    pipeline.materialize_window(now - timedelta(days=2), end, env)
    store = pipeline.open_store(env)
    settings = ApiSettings(warehouse_url=str(store.engine.url), refresh_seconds=REFRESH_S)
    port = free_port()
    server = ThreadedServer(create_app(settings), port)
    server.start()
    problems: list[str] = []
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.goto(f"http://127.0.0.1:{port}/availability")
        page.wait_for_function(
            "() => window.availabilityView && window.availabilityView.refreshes >= 1",
            timeout=20_000,
        )
        options = page.eval_on_selector_all("#scenario option", "os => os.map(o => o.value)")
        assert options == sorted(s[0] for s in demo.SCENARIOS)
        page.select_option("#period", "2")
        page.select_option("#scenario", "Search")
        page.wait_for_function(
            "() => window.availabilityView.scenario === 'Search'", timeout=10_000
        )
        avail = chart(page, "availability")
        assert len(avail["x"]) == 47  # the two days before the running hour (empty so far)
        assert all(0 <= y <= 100 for y in avail["y"])
        budget = chart(page, "budget")
        assert len(budget["x"]) == 30
        assert page.text_content("#slo-target") == "99.50 %"
        assert page.text_content("#caption-availability").endswith("Product search")

        # Telemetry of the running hour lands; a refresh counts it; the graph takes it in place.
        page.evaluate("window.__sameDocument = 'yes'")
        loaded = page.evaluate("window.availabilityView.loadedAt")
        folder = ev.hour_folder(tmp_path / "events", now)
        late = [
            ev.base(
                now,
                30,
                eventId=f"late-{i}",
                cC={"ms.b.tel.scenario": "Search"},
                RequestStatus=0 if i % 4 else 7,
            )
            for i in range(40)
        ]
        ev.write_jsonl(folder / "late.jsonl", late)
        report = pipeline.refresh_once(env, now=now)
        assert [h.hour for h in report.hours] == [now]
        page.wait_for_function(
            "(n) => document.getElementById('chart-availability').data[0].x.length === n",
            arg=48,
            timeout=(REFRESH_S * 3 + 10) * 1000,
        )
        assert chart(page, "availability")["y"][-1] == 75.0  # 30 of 40 succeeded
        assert page.evaluate("window.__sameDocument") == "yes"
        assert page.evaluate("window.availabilityView.loadedAt") == loaded
        ARTIFACTS.mkdir(exist_ok=True)
        page.wait_for_timeout(500)
        page.screenshot(path=str(ARTIFACTS / "availability.png"), full_page=True)
        assert problems == [], problems

        server.stop()
        page.wait_for_selector("#error:not([hidden])", timeout=(REFRESH_S * 3 + 5) * 1000)
        assert "Could not load" in page.text_content("#error")
    finally:
        server.stop()
        store.engine.dispose()
