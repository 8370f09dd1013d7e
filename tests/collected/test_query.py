"""The query route ``GET /<key>/<stat_type>/<date>/<hour>`` inside the metrics API."""

import json
import math
import random
from datetime import datetime, timedelta

import pytest
import sqlglot
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.dialects import mssql

from metrics_pipeline.api import ApiSettings, create_app
from metrics_pipeline.clock import utc_now
from metrics_pipeline.collected.rules import hour_start, hour_stats
from metrics_pipeline.web.auth import token_digest

from .test_sql import rows

LOOPBACK = ("127.0.0.1", 50000)
H = datetime(2025, 3, 1, 10)


@pytest.fixture
def filled(store):
    """Raw points for two keys over three closed hours (written to CollectedMetricHourly) and
    the running hour (raw only); the expected statistics computed independently."""
    rng = random.Random(11)
    points, values = [], {}
    now = hour_start(utc_now())
    for key in ("rt", "cpu.load"):
        for start in (H, H + timedelta(hours=1), H + timedelta(hours=2), now):
            vs = [round(rng.uniform(0, 100), 2) for _ in range(rng.randrange(1, 12))]
            values[(key, start)] = vs
            points += [
                (f"{key}-{start:%d%H}-{i}", key, v, start + timedelta(seconds=i))
                for i, v in enumerate(vs)
            ]
    store.insert_points(rows(points))
    store.write_hours([H, H + timedelta(hours=1), H + timedelta(hours=2)])
    return store, values


def get(c, key, stat, start):
    return c.get(f"/{key}/{stat}/{start:%Y-%m-%d}/{start.hour}")


def test_every_answer_equals_an_independent_computation(filled):
    store, values = filled
    with TestClient(create_app(ApiSettings(warehouse_url=store.url)), client=LOOPBACK) as c:
        for (key, start), vs in values.items():
            want = hour_stats(vs)
            for stat in ("average", "min", "max", "median", "count"):
                r = get(c, key, stat, start)
                assert r.status_code == 200, r.text
                body = r.json()
                assert body == {
                    "key": key,
                    "stat": stat,
                    "date": start.date().isoformat(),
                    "hour": start.hour,
                    "value": pytest.approx(want.stat(stat), rel=1e-12),
                    "count": len(vs),
                }
        # An hour without data: 200, null, 0; also at the ends of the API's time range.
        for start in (H - timedelta(hours=1), datetime(1753, 1, 1), datetime(9999, 12, 31)):
            empty = get(c, "rt", "median", start).json()
            assert (empty["value"], empty["count"]) == (None, 0)


def strict_json(text: str):
    """JSON as RFC 8259 has it: ``NaN``, ``Infinity`` and ``-Infinity`` are refused."""

    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_extreme_values_keep_statistics_and_answers_finite(store):
    """The largest values the collector accepts, and rows beyond them that an older collector
    (or another writer) stored: no statistic is infinite, no answer is invalid JSON."""
    points = [
        ("m/1", "low", -1e250, H),
        ("m/2", "low", -1e250, H + timedelta(minutes=1)),
        ("m/3", "low", -1e308, H + timedelta(minutes=2)),  # stored before values were bounded
        ("m/4", "low", -1e308, H + timedelta(minutes=3)),
        ("m/5", "high", 1e250, H),
        ("m/6", "high", 1e308, H + timedelta(minutes=1)),
    ]
    store.insert_points(rows(points))
    store.write_hours([H])
    with store.engine.connect() as conn:
        written = {r.MetricKey: r for r in conn.execute(store.t.hourly.select())}
    assert written["low"].SampleCount == 2 and written["high"].SampleCount == 1
    for row in written.values():
        for value in (row.Average, row.Minimum, row.Maximum, row.Median):
            assert math.isfinite(value), row
    assert (written["low"].Median, written["high"].Average) == (-1e250, 1e250)
    with TestClient(create_app(ApiSettings(warehouse_url=store.url)), client=LOOPBACK) as c:
        for key, start in (("low", H), ("high", H), ("low", H + timedelta(hours=5))):
            for stat in ("average", "min", "max", "median", "count"):
                r = get(c, key, stat, start)
                assert r.status_code == 200, r.text
                value = strict_json(r.text)["value"]
                assert value is None or math.isfinite(value)
        # The running hour is computed from the raw rows by the same statement.
        now = hour_start(utc_now())
        store.insert_points(rows([("m/7", "low", -1e308, now), ("m/8", "low", -1e250, now)]))
        body = strict_json(get(c, "low", "median", now).text)
        assert (body["value"], body["count"]) == (-1e250, 1)


def test_errors_name_the_bad_part(filled):
    store, _ = filled
    with TestClient(create_app(ApiSettings(warehouse_url=store.url)), client=LOOPBACK) as c:
        for path, status, parameter in [
            ("/never/average/2025-03-01/10", 404, "key"),
            ("/rt/mean/2025-03-01/10", 400, "stat_type"),
            ("/rt/average/2025-3-1/10", 400, "date"),
            ("/rt/average/2025-02-30/10", 400, "date"),
            ("/rt/average/2025-03-01/24", 400, "hour"),
            ("/rt/average/2025-03-01/x", 400, "hour"),
            ("/bad key!/average/2025-03-01/10", 400, "key"),
            # Dates Python reads but whose hour the API cannot represent (once 500 OverflowError).
            ("/rt/average/9999-12-31/23", 400, "date"),
            ("/rt/average/9999-12-31/1", 400, "date"),
            ("/rt/average/1752-12-31/23", 400, "date"),
            ("/rt/average/0001-01-01/0", 400, "date"),
        ]:
            r = c.get(path)
            assert r.status_code == status, (path, r.text)
            assert r.json()["parameter"] == parameter, path
            assert r.json()["detail"].startswith(f"{parameter}: "), path


def test_the_route_does_not_shadow_the_api_or_the_dashboard(filled):
    store, _ = filled
    with TestClient(create_app(ApiSettings(warehouse_url=store.url)), client=LOOPBACK) as c:
        assert c.get("/api/health").status_code == 200
        assert c.get("/").status_code == 200
        assert c.get("/api/metrics/11/a/b").status_code == 404
        assert c.get("/static/dashboard.css").status_code == 200
        assert c.get("/static/a/b/c").status_code == 404
        assert "/{key}/{stat_type}/{day}/{hour}" in c.get("/openapi.json").json()["paths"]


def test_a_warehouse_without_collected_tables_answers_404(tmp_path):
    from metrics_pipeline.resources.engines import create_db_engine

    url = f"sqlite:///{tmp_path / 'w.db'}"
    create_db_engine(url, "warehouse", must_exist=False).connect().close()
    with TestClient(create_app(ApiSettings(warehouse_url=url)), client=LOOPBACK) as c:
        assert c.get("/rt/average/2025-03-01/10").status_code == 404


def test_same_authentication_as_the_metrics_api(filled, tmp_path):
    store, _ = filled
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps([{"name": "p", "sha256": token_digest("tok"), "billers": [1]}]))
    app = create_app(ApiSettings(warehouse_url=store.url, tokens_file=str(tokens)))
    with TestClient(app, client=("10.0.0.5", 5000)) as c:
        assert get(c, "rt", "max", H).status_code == 401
        assert (
            get(
                c,
                "rt",
                "max",
                H,
            ).status_code
            == 401
        )
        r = c.get(f"/rt/max/{H:%Y-%m-%d}/{H.hour}", headers={"Authorization": "Bearer tok"})
        assert r.status_code == 200


def test_every_statement_of_the_route_is_tsql(filled):
    store, _ = filled
    app = create_app(ApiSettings(warehouse_url=store.url))
    captured = []
    engine = app.state.metrics.reader.engine
    event.listen(engine, "before_execute", lambda conn, cl, *a: captured.append(cl))
    with TestClient(app, client=LOOPBACK) as c:
        get(c, "rt", "median", H)
        get(c, "rt", "median", H - timedelta(hours=1))
        c.get("/never/median/2025-03-01/10")
        c.get(f"/rt/p99/{H:%Y-%m-%d}/{H.hour}", params={"app": "app"})
        c.get(f"/rt/p99/{H:%Y-%m-%d}/{H.hour - 1}", params={"app": "app"})
        c.get("/api/collected/rt/series", params={"app": "app", "from": "2025-03-01"})
        c.get("/api/collected/rt/series")
    # The dialect's own catalog lookup (has_table) is not ours: keep the family's statements.
    ours = [s for s in captured if "CollectedMetric" in str(s)]
    assert len(ours) >= 5
    for statement in ours:
        text = str(
            statement.compile(dialect=mssql.dialect(), compile_kwargs={"render_postcompile": True})
        )
        assert "LIMIT" not in text.upper()
        sqlglot.parse_one(text, read="tsql")


@pytest.fixture
def two_apps(store):
    """Values of one key from two apps over three closed hours (written) and the running hour
    (raw only); the expected statistics per app and of both, computed independently."""
    rng = random.Random(23)
    now = hour_start(utc_now())
    values = {}
    for app in ("web", "billing"):
        for start in (H, H + timedelta(hours=1), H + timedelta(hours=3), now):
            vs = [round(rng.uniform(0, 500), 2) for _ in range(rng.randrange(1, 30))]
            values[(app, start)] = vs
            store.insert_points(
                rows(
                    [
                        (f"{app}/{start:%d%H}-{i}", "rt", v, start + timedelta(seconds=i))
                        for i, v in enumerate(vs)
                    ],
                    app=app,
                )
            )
    store.write_hours([H + timedelta(hours=h) for h in range(4)])
    return store, values, now


def test_apps_are_kept_apart_and_the_seed_route_answers_all_apps(two_apps):
    store, values, now = two_apps
    with TestClient(create_app(ApiSettings(warehouse_url=store.url)), client=LOOPBACK) as c:
        for start in (H, H + timedelta(hours=1), H + timedelta(hours=3), now):
            both = hour_stats(values[("web", start)] + values[("billing", start)])
            for stat in ("average", "median", "count", "p95", "p99", "min", "max"):
                body = get(c, "rt", stat, start).json()
                assert "app" not in body
                assert body["value"] == pytest.approx(both.stat(stat), rel=1e-12)
                for app in ("web", "billing"):
                    want = hour_stats(values[(app, start)])
                    r = c.get(f"/rt/{stat}/{start:%Y-%m-%d}/{start.hour}", params={"app": app})
                    assert r.status_code == 200, r.text
                    assert r.json()["app"] == app and r.json()["count"] == want.count
                    assert r.json()["value"] == pytest.approx(want.stat(stat), rel=1e-12)
        for params, status, parameter in [
            ({"app": "nobody"}, 404, "app"),
            ({"app": "bad app"}, 400, "app"),
        ]:
            r = c.get(f"/rt/average/{H:%Y-%m-%d}/{H.hour}", params=params)
            assert (r.status_code, r.json()["parameter"]) == (status, parameter), r.text
        store.insert_points(rows([("x/1", "other", 1.0, H)], app="x"))
        r = c.get(f"/other/average/{H:%Y-%m-%d}/{H.hour}", params={"app": "web"})
        assert (r.status_code, r.json()["parameter"]) == (404, "key")


def test_the_series_route_gives_a_range_of_hours(two_apps):
    store, values, now = two_apps
    with TestClient(create_app(ApiSettings(warehouse_url=store.url)), client=LOOPBACK) as c:
        r = c.get(
            "/api/collected/rt/series",
            params={
                "stat": "p95",
                "from": "2025-03-01T09:30Z",
                "to": "2025-03-01T14:00Z",
                "app": "web",
            },
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["key"], body["stat"], body["app"]) == ("rt", "p95", "web")
        assert (body["from"], body["to"]) == ("2025-03-01T09:00:00Z", "2025-03-01T14:00:00Z")
        # Hour 12 has no points: a gap, not a zero.
        assert [h["start"] for h in body["hours"]] == [
            "2025-03-01T10:00:00Z",
            "2025-03-01T11:00:00Z",
            "2025-03-01T13:00:00Z",
        ]
        for h, start in zip(
            body["hours"], (H, H + timedelta(hours=1), H + timedelta(hours=3)), strict=True
        ):
            want = hour_stats(values[("web", start)])
            assert (h["value"], h["count"]) == (want.p95, want.count)
        # All apps, the default range: the running hour, computed from the raw rows.
        recent = c.get("/api/collected/rt/series").json()
        both = hour_stats(values[("web", now)] + values[("billing", now)])
        assert recent["app"] is None and recent["stat"] == "average"
        assert recent["hours"][-1]["count"] == both.count
        assert recent["hours"][-1]["value"] == pytest.approx(both.average)
        for params, status, parameter in [
            ({"stat": "mean"}, 400, "stat"),
            ({"from": "2025-03-02", "to": "2025-03-01"}, 400, "from"),
            ({"from": "2020-01-01", "to": "2025-03-01"}, 400, "to"),
            ({"from": "yesterday"}, 400, "from"),
            ({"app": "nobody"}, 404, "app"),
        ]:
            r = c.get("/api/collected/rt/series", params=params)
            assert (r.status_code, r.json()["parameter"]) == (status, parameter), (params, r.text)
        r = c.get("/api/collected/never/series")
        assert (r.status_code, r.json()["parameter"]) == (404, "key")
        assert "/api/collected/{key}/series" in c.get("/openapi.json").json()["paths"]


def test_the_key_list_and_the_dashboard_view(two_apps):
    store, _, _ = two_apps
    with TestClient(create_app(ApiSettings(warehouse_url=store.url)), client=LOOPBACK) as c:
        body = c.get("/api/collected/keys").json()
        assert body == {
            "series": [{"app": "billing", "key": "rt"}, {"app": "web", "key": "rt"}],
            "truncated": False,
        }
        page = c.get("/collected")
        assert page.status_code == 200 and "/static/collected.js" in page.text
        assert '<option value="p99">' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert c.get("/static/collected.js").status_code == 200
        assert "/collected" not in c.get("/openapi.json").json()["paths"]
