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
from metrics_pipeline.api.auth import token_digest
from metrics_pipeline.collected.rules import hour_start, hour_stats, utc_now

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
    # The dialect's own catalog lookup (has_table) is not ours: keep the family's statements.
    ours = [s for s in captured if "CollectedMetric" in str(s)]
    assert len(ours) >= 5
    for statement in ours:
        text = str(
            statement.compile(dialect=mssql.dialect(), compile_kwargs={"render_postcompile": True})
        )
        assert "LIMIT" not in text.upper()
        sqlglot.parse_one(text, read="tsql")
