"""The availability view in real headless Chromium (Debian's chromium, driven by Playwright):
scenario selector filled from the Scenario table, availability and budget graphs drawn from the
warehouse, a late file counted by a refresh shows up on the next timer tick without a reload;
the target line drawn above the availability line with room above 100 %, both graphs over the
chosen range, ok / warning / page states in words and colours, an empty range in words."""

from datetime import UTC, datetime, timedelta

from metrics_pipeline.api import ApiSettings, create_app
from metrics_pipeline.availability import demo, pipeline
from tests.api.helpers import ThreadedServer, free_port, watched_page
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
    pipeline.compute_window(now - timedelta(days=2), end, env)
    store = pipeline.open_store(env)
    settings = ApiSettings(warehouse_url=str(store.engine.url), refresh_seconds=REFRESH_S)
    port = free_port()
    server = ThreadedServer(create_app(settings), port)
    server.start()
    try:
        page, problems = watched_page(browser, 1280, 1000)
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
        assert len(budget["x"]) == 2  # the chosen two days, not 30
        assert page.text_content("#slo-target") == "99.50 %"
        assert page.text_content("#caption-availability").endswith("Product search")
        # The target is its own dashed line, drawn after (above) the availability line, with
        # room above 100 %.
        traces = page.evaluate(
            """() => document.getElementById('chart-availability').data.map(
                   t => ({name: t.name, dash: t.line && t.line.dash}))"""
        )
        assert traces[-1]["name"].startswith("target") and traces[-1]["dash"] == "dash"
        assert traces[0]["name"] == "availability"
        top = page.evaluate(
            "() => document.getElementById('chart-availability').layout.yaxis.range[1]"
        )
        assert top > 100
        # Both graphs span the chosen range (two days up to the end of the running hour).
        spans = page.evaluate(
            """() => ['availability', 'budget'].map(n => document.getElementById('chart-' + n)
                   .layout.xaxis.range.map(v => new Date(String(v).replace(' ', 'T') +
                   (String(v).length <= 10 ? 'T00:00:00Z' : String(v).endsWith('Z') ? '' : 'Z'))
                   .getTime()))"""
        )
        assert (spans[0][1] - spans[0][0]) / 3_600_000 == 48
        assert 24 <= (spans[1][1] - spans[1][0]) / 3_600_000 <= 72
        # The budget's state word agrees with its sign; the alerts have a state colour.
        budget_text = page.text_content("#slo-budget")
        state = page.get_attribute("#slo-budget", "data-state")
        if budget_text.startswith("-"):
            assert "exhausted" in budget_text and state == "page"
        else:
            assert state in ("ok", "warning")
        for name in ("page", "ticket"):
            assert page.get_attribute(f"#slo-{name}", "data-state") in ("ok", "warning", "page")
        assert page.text_content("#last-updated").endswith(" UTC")
        assert page.is_hidden("#empty-availability")
        assert (
            page.evaluate(
                "() => getComputedStyle(document.querySelector('#slo table')).borderCollapse"
            )
            == "collapse"
        )
        assert (
            page.evaluate("() => document.querySelector('#slo').getBoundingClientRect().left") >= 12
        )  # the SLO table sits in a panel, not against the left edge

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

        # An empty range says so in words, and a spent budget (-58.4 %) is "exhausted" in the
        # page colour, never a plain "ok" (the API's answers altered in the browser).
        def no_points(route):
            response = route.fetch()
            route.fulfill(response=response, json={**response.json(), "points": []})

        def spent(route):
            response = route.fetch()
            body = response.json()
            for scenario in body["scenarios"]:
                scenario["budgetRemaining"] = -0.584
            route.fulfill(response=response, json=body)

        page.route("**/api/availability/scenarios/Search?*", no_points)
        page.route("**/api/availability/slo?*", spent)
        page.click("#refresh-now")
        page.wait_for_selector("#empty-availability:not([hidden])", timeout=10_000)
        assert page.text_content("#empty-availability").startswith(
            "No availability data for this range"
        )
        assert page.text_content("#empty-availability").endswith(" UTC)")
        page.wait_for_function(
            "() => document.getElementById('slo-budget').textContent.startsWith('-58.4')"
        )
        assert page.text_content("#slo-budget") == "-58.4 % · exhausted"
        assert page.get_attribute("#slo-budget", "data-state") == "page"
        assert page.get_attribute("#slo-budget", "class") == "state-page"
        page.unroute("**/api/availability/scenarios/Search?*")
        page.unroute("**/api/availability/slo?*")

        server.stop()
        page.wait_for_selector("#error:not([hidden])", timeout=(REFRESH_S * 3 + 5) * 1000)
        assert "Could not load" in page.text_content("#error")
    finally:
        server.stop()
        store.engine.dispose()
