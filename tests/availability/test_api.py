"""The availability endpoints over a warehouse materialized from demo events: series hourly and
daily, the time x scenarios pivot, SLO state, errors; the SQL they send parses as T-SQL."""

from datetime import UTC, datetime, timedelta

import pytest
import sqlglot
from sqlalchemy import event, select
from sqlalchemy.dialects import mssql

from metrics_pipeline.api import ApiSettings, create_app
from metrics_pipeline.availability import demo, pipeline
from tests.api.helpers import LOOPBACK_CLIENT

NOW = datetime.now(UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0)
END = NOW + timedelta(hours=1)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("avail_api")
    env = {"METRICS_DATA_DIR": str(tmp / "data"), "METRICS_EVENTS_ROOT": str(tmp / "events")}
    demo.create_availability_demo(env, END, days=3, seed=3, scale=0.3)
    pipeline.compute_window(END - timedelta(days=3), END, env)
    store = pipeline.open_store(env)
    yield env, store
    store.engine.dispose()


@pytest.fixture(scope="module")
def client(warehouse):
    from fastapi.testclient import TestClient

    env, store = warehouse
    app = create_app(ApiSettings(warehouse_url=str(store.engine.url)))
    statements = []
    event.listen(
        app.state.metrics.reader.engine,
        "before_execute",
        lambda conn, clause, *a: statements.append(clause),
    )
    with TestClient(app, client=LOOPBACK_CLIENT) as c:
        c.statements = statements
        yield c


def test_scenarios(client):
    body = client.get("/api/availability/scenarios").json()
    assert [s["scenarioId"] for s in body["scenarios"]] == sorted(s[0] for s in demo.SCENARIOS)
    assert {s["scenarioId"]: s["availabilityTarget"] for s in body["scenarios"]}["Login"] == 99.95


def test_series_equal_the_published_rows(client, warehouse):
    _env, store = warehouse
    p = store.tables.published
    for level in (1, 2):
        body = client.get(
            "/api/availability/scenarios/Checkout",
            params={
                "timeStampTypeId": level,
                "from": (END - timedelta(days=3)).isoformat(),
                "to": END.isoformat(),
            },
        ).json()
        rows = store.read(
            select(p)
            .where(
                p.c.ScenarioId == "Checkout",
                p.c.TimeStampTypeId == level,
                p.c.StartTime >= END - timedelta(days=3),
            )
            .order_by(p.c.StartTime)
        )
        assert [pt["startTime"] for pt in body["points"]] == [
            r["StartTime"].isoformat() for r in rows
        ]
        assert [pt["totalRequests"] for pt in body["points"]] == [r["TotalRequests"] for r in rows]
        assert [pt["availability"] for pt in body["points"]] == [
            float(r["Availability"]) for r in rows
        ]
        assert len(rows) == (72 if level == 1 else 3)


def test_pivot_is_time_by_scenarios(client):
    body = client.get(
        "/api/availability/pivot",
        params={
            "timeStampTypeId": 2,
            "from": (END - timedelta(days=4)).isoformat(),
            "to": END.isoformat(),
            "scenarios": "Checkout,Search",
        },
    ).json()
    assert [s["scenarioId"] for s in body["scenarios"]] == ["Checkout", "Search"]
    # The demo's three days of hours end at END: four calendar days, or three when END is midnight.
    days = {(END - timedelta(hours=h)).date() for h in range(1, 3 * 24 + 1)}
    assert [t[:10] for t in body["times"]] == sorted(d.isoformat() for d in days)
    assert all(len(row) == 2 for row in body["availability"])
    assert all(0 <= v <= 100 for row in body["availability"] for v in row if v is not None)
    whole = client.get("/api/availability/pivot", params={"timeStampTypeId": 1}).json()
    assert demo.UNKNOWN_SCENARIO not in {s["scenarioId"] for s in whole["scenarios"]}
    assert len(whole["scenarios"]) == len(demo.SCENARIOS)


def test_slo_state(client):
    body = client.get("/api/availability/slo", params={"days": 5}).json()
    by_id = {s["scenarioId"]: s for s in body["scenarios"]}
    assert set(by_id) == {s[0] for s in demo.SCENARIOS}
    for s in by_id.values():
        assert [a["name"] for a in s["alerts"]] == ["page", "ticket"]
        assert len(s["budget"]) == 5 and s["requests30d"] > 0
    # The demo's Search degrades over its last six hours: a slow burn.
    search = {a["name"]: a for a in by_id["Search"]["alerts"]}
    assert search["ticket"]["longBurn"] > 1


@pytest.mark.parametrize(
    "path, params, status, parameter",
    [
        ("/api/availability/scenarios/Nope", {}, 404, "scenarioId"),
        ("/api/availability/scenarios/Checkout", {"timeStampTypeId": 3}, 400, "timeStampTypeId"),
        ("/api/availability/scenarios/Checkout", {"from": "yesterday"}, 400, "from"),
        ("/api/availability/pivot", {"from": "2025-03-02", "to": "2025-03-01"}, 400, "from"),
        (
            "/api/availability/pivot",
            {"timeStampTypeId": 1, "from": "2020-01-01", "to": "2025-01-01"},
            400,
            "from",
        ),
        ("/api/availability/slo", {"days": 0}, 422, None),
        ("/api/availability/pivot", {"timestampTypeId": 2}, 400, "timestampTypeId"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_parameter(client, path, params, status, parameter):
    r = client.get(path, params=params)
    assert r.status_code == status, r.text
    if parameter:
        assert r.json()["parameter"] == parameter


def test_the_page_is_served(client):
    r = client.get("/availability")
    assert r.status_code == 200 and "availability.js" in r.text
    assert "Content-Security-Policy" in r.headers


def test_every_statement_parses_as_tsql(client):
    assert client.statements
    for statement in client.statements:
        text = str(
            statement.compile(dialect=mssql.dialect(), compile_kwargs={"render_postcompile": True})
        )
        assert "LIMIT" not in text.upper()
        assert sqlglot.parse_one(text, read="tsql") is not None


def test_a_warehouse_without_availability_tables_answers_empty(tmp_path):
    import sqlite3

    from fastapi.testclient import TestClient

    sqlite3.connect(tmp_path / "empty.db").close()  # a warehouse of another family only
    app = create_app(ApiSettings(warehouse_url=f"sqlite:///{tmp_path / 'empty.db'}"))
    with TestClient(app, client=LOOPBACK_CLIENT) as c:
        assert c.get("/api/availability/scenarios").json() == {"scenarios": []}
        assert c.get("/api/availability/pivot").json()["scenarios"] == []
        assert c.get("/api/availability/slo").json()["scenarios"] == []
        assert c.get("/api/availability/scenarios/Checkout").status_code == 404
