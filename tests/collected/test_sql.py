"""Every statement of the family compiles for SQL Server and parses as T-SQL (no LIMIT, no
tuple IN, no percentile_cont WITHIN GROUP), and the store computes exact statistics on real
SQLite and PostgreSQL warehouses."""

import random
from datetime import datetime, timedelta

import pytest
import sqlglot
from sqlalchemy import select
from sqlalchemy.dialects import mssql
from sqlglot import exp

from metrics_pipeline.collected import sql
from metrics_pipeline.collected.rules import hour_stats

T = sql.build_tables()
H = datetime(2025, 3, 1, 10)
STATEMENTS = {
    "existing_rows": sql.existing_rows(T, ["a/1", "a/2"]),
    "insert_rows": sql.insert_rows(T).values(
        MessageId="a/1", MetricKey="k", App="a", Value=1.0, CollectedAt=H, ReceivedAt=H
    ),
    "max_raw_id": sql.max_raw_id(T),
    "changed_hours": sql.changed_hours(T, 3, 9),
    "key_collected": sql.key_collected(T, "k"),
    "hour_stats_select": sql.hour_stats_select(T, H, H + timedelta(hours=1), "k"),
    "hour_stats_select_by_app": sql.hour_stats_select(T, H, H + timedelta(hours=1), by_app=True),
    "hour_stats_select_of_app": sql.hour_stats_select(T, H, H + timedelta(hours=1), "k", "web"),
    "insert_app_hour_stats": sql.insert_hour_stats(T, H, H + timedelta(hours=1), by_app=True),
    "delete_app_hours": sql.delete_hours(T, H, H + timedelta(hours=1), by_app=True),
    "read_series": sql.read_series(T, "k", H, H + timedelta(hours=5), "web"),
    "app_known": sql.app_known(T, "web"),
    "hour_collected": sql.hour_collected(T, H, H + timedelta(hours=1)),
    "app_collected": sql.app_collected(T, "web"),
    "delete_hours": sql.delete_hours(T, H, H + timedelta(hours=1)),
    "insert_hour_stats": sql.insert_hour_stats(T, H, H + timedelta(hours=1)),
    "read_hour_stats": sql.read_hour_stats(T, "k", H),
    "count_hours": sql.count_hours(T, H, H + timedelta(hours=1)),
    "hourly_key_known": sql.hourly_key_known(T, "k"),
    "plain_group_by": sql.plain_group_by(T, H, H + timedelta(hours=1)),
    "read_cursor": sql.read_cursor(T),
    "insert_cursor": sql.insert_cursor(T, 5, 0, H),
    "advance_cursor": sql.advance_cursor(T, 9, 5, H),
}


def tsql(statement) -> str:
    return str(
        statement.compile(dialect=mssql.dialect(), compile_kwargs={"render_postcompile": True})
    )


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_statement_is_tsql(name):
    text = tsql(STATEMENTS[name])
    upper = text.upper()
    assert "LIMIT" not in upper and "WITHIN GROUP" not in upper, text
    tree = sqlglot.parse_one(text, read="tsql")
    for node in tree.find_all(exp.In):
        assert not isinstance(node.this, exp.Tuple), text


def test_one_row_lookups_use_top():
    assert "TOP 1" in tsql(STATEMENTS["key_collected"])
    assert "DATEADD(hour" in tsql(STATEMENTS["changed_hours"])


def test_the_ddl_compiles_for_sql_server():
    from sqlalchemy.schema import CreateIndex, CreateTable

    for table in T.metadata.sorted_tables:
        sqlglot.parse_one(str(CreateTable(table).compile(dialect=mssql.dialect())), read="tsql")
        for index in table.indexes:
            str(CreateIndex(index).compile(dialect=mssql.dialect()))


def rows(points, received=H, app="app"):
    return [
        {
            "MessageId": m,
            "MetricKey": k,
            "App": app,
            "Value": v,
            "CollectedAt": t,
            "ReceivedAt": received,
        }
        for m, k, v, t in points
    ]


def test_insert_is_idempotent_per_message_and_key(store):
    first = rows([("a/1", "cpu", 1.0, H), ("a/1", "mem", 2.0, H), ("a/2", "cpu", 3.0, H)])
    assert store.insert_points(first) == 3
    again = first + rows([("a/3", "cpu", 4.0, H), ("a/3", "cpu", 4.0, H)])
    assert store.insert_points(again) == 1
    with store.engine.connect() as conn:
        stored = conn.execute(select(store.t.raw.c.MessageId, store.t.raw.c.MetricKey)).all()
    assert sorted(stored) == [("a/1", "cpu"), ("a/1", "mem"), ("a/2", "cpu"), ("a/3", "cpu")]


def test_hourly_statistics_are_exact(store):
    rng = random.Random(5)
    points, expected = [], {}
    for key, n in (("odd", 7), ("even", 8), ("one", 1), ("ties", 6)):
        for hour in range(3):
            start = H + timedelta(hours=hour)
            values = [
                (rng.choice([1.0, 2.0]) if key == "ties" else round(rng.uniform(-50, 50), 3))
                for _ in range(n + hour)
            ]
            expected[(key, start)] = hour_stats(values)
            for i, v in enumerate(values):
                t = start + timedelta(seconds=rng.randrange(3600))
                points.append((f"m{key}{hour}-{i}", key, v, t))
    # Boundaries: a point at exactly the next hour belongs to it, not to this one.
    points.append(("edge", "edge", 9.0, H + timedelta(hours=1)))
    expected[("edge", H + timedelta(hours=1))] = hour_stats([9.0])
    store.insert_points(rows(points))
    written = store.write_hours([H + timedelta(hours=h) for h in range(3)])
    assert written == (len(expected), len(expected))
    for (key, start), want in expected.items():
        got = store.hour_stats(key, start)
        raw = store.hour_stats(key, start, from_raw=True)
        for s in (got, raw):
            assert s.count == want.count, (key, start)
            for stat in ("average", "min", "max", "median", "p95", "p99"):
                assert s.stat(stat) == pytest.approx(want.stat(stat), rel=1e-12), (key, stat)
    assert store.hour_stats("edge", H).count == 0
    assert store.key_known("odd") and not store.key_known("never")


def test_rewriting_an_hour_replaces_its_rows(store):
    store.insert_points(rows([("a/1", "k", 1.0, H)]))
    store.write_hours([H])
    store.insert_points(rows([("a/2", "k", 3.0, H + timedelta(minutes=59))]))
    store.write_hours([H])
    s = store.hour_stats("k", H)
    assert (s.count, s.median, s.maximum) == (2, 2.0, 3.0)


def test_the_cursor_plans_changed_hours_with_one_refresh_of_overlap(store):
    empty = store.plan_refresh()
    assert (empty.current, empty.seen, empty.hours) == (None, 0, ())
    store.insert_points(rows([("a/1", "k", 1.0, H), ("a/2", "k", 1.0, H + timedelta(hours=2))]))
    plan = store.plan_refresh()
    assert plan.hours == (H, H + timedelta(hours=2)) and plan.seen == 2
    store.advance(plan)
    # A late point for a closed hour: the next plan holds it (and the overlap).
    store.insert_points(rows([("a/3", "k", 5.0, H - timedelta(hours=5))]))
    plan2 = store.plan_refresh()
    assert (plan2.current, plan2.previous, plan2.seen) == (2, 0, 3)
    assert H - timedelta(hours=5) in plan2.hours
    store.advance(plan2)
    plan3 = store.plan_refresh()
    assert (plan3.previous, plan3.hours) == (2, (H - timedelta(hours=5),))
    store.advance(plan3)
    assert store.plan_refresh().hours == ()
    # A stale plan (another refresh moved the cursor first) does not move it back.
    store.advance(plan2)
    assert store.plan_refresh().seen == 3 and store.plan_refresh().previous == 3


def test_statistics_are_kept_per_app_beside_the_all_apps_figure(store):
    rng = random.Random(9)
    values = {
        app: [round(rng.uniform(0, 100), 2) for _ in range(n)]
        for app, n in (("web", 9), ("api", 40))
    }
    for app, vs in values.items():
        store.insert_points(
            rows(
                [(f"{app}/{i}", "rt", v, H + timedelta(seconds=i)) for i, v in enumerate(vs)],
                app=app,
            )
        )
    assert store.write_hours([H]) == (1, 2)
    for app, vs in values.items():
        for s in (store.hour_stats("rt", H, app=app), store.hour_stats("rt", H, True, app)):
            want = hour_stats(vs)
            assert s.count == want.count and s.median == pytest.approx(want.median)
            assert (s.p95, s.p99, s.minimum) == (want.p95, want.p99, want.minimum)
    everything = hour_stats(values["web"] + values["api"])
    assert store.hour_stats("rt", H).average == pytest.approx(everything.average)
    assert store.hour_stats("rt", H).p99 == everything.p99
    assert store.key_known("rt", "web") and not store.key_known("rt", "nobody")
    assert store.app_known("api") and not store.app_known("nobody")
    assert list(store.series("rt", H - timedelta(hours=2), H + timedelta(hours=2), "web")) == [H]


def test_an_older_table_is_upgraded_in_place(tmp_path):
    """A CollectedMetricHourly created before P95/P99 gains the columns; its rows stay."""
    from sqlalchemy import text

    from .conftest import sqlite_store

    store = sqlite_store(tmp_path)
    with store.engine.begin() as conn:
        conn.execute(text('DROP TABLE "CollectedMetricHourly"'))
        conn.execute(
            text(
                'CREATE TABLE "CollectedMetricHourly" ("MetricKey" VARCHAR(100) NOT NULL, '
                '"StartTime" DATETIME NOT NULL, "SampleCount" BIGINT NOT NULL, "Average" FLOAT, '
                '"Minimum" FLOAT, "Maximum" FLOAT, "Median" FLOAT, PRIMARY KEY ("MetricKey", "StartTime"))'
            )
        )
        conn.execute(
            text(
                "INSERT INTO \"CollectedMetricHourly\" VALUES ('old', '2025-03-01 10:00:00.000000', 2, 1.5, 1, 2, 1.5)"
            )
        )
    store.ensure_schema()
    old = store.hour_stats("old", H)
    assert (old.count, old.median, old.p95) == (2, 1.5, None)
