"""Refreshes driven by change: late rows of any age are counted by the next refresh, which
recomputes only the cells they touched; cursors move with the rows, never past a failure."""

import os
from datetime import datetime, timedelta

import pytest
from sqlalchemy import MetaData, create_engine, text

from metrics_pipeline.cli import main
from metrics_pipeline.coverage import DATAPUMP
from metrics_pipeline.datapump.runs import refresh_cycle
from metrics_pipeline.datapump.sql import ShardNames, detail_table, occupancy_table
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import HOURLY
from tests.support import read_raw, reference, sqlite_environment, warehouse_rows

#: The refresh's "now": the last day of the test data.
NOW = datetime(2025, 3, 3, 12, 10)
WINDOW = ["--start", "2025-03-01T00:00Z", "--end", "2025-03-03T12:00Z"]
LEVELS = {1: "hourly", 2: "daily", 3: "weekly"}


@pytest.fixture
def env(tmp_path):
    e = sqlite_environment(tmp_path, per_hour=3)
    e["DAGSTER_HOME"] = str(tmp_path / "home")
    return e


def shard(env, name):
    return env["METRICS_SHARD_URL_TEMPLATE"].replace("{shard}", name)


def insert(env, name, rows, ids=None):
    engine = create_engine(shard(env, name))
    with engine.begin() as conn:
        for i, (biller, created, status, rt) in enumerate(rows):
            conn.execute(
                text(
                    'INSERT INTO "DataPumpDetail" ("DataPumpDetailId", "BillerId", "CreatedDate", '
                    '"StatusCode", "ResponseTime") VALUES (:id, :b, :c, :s, :r)'
                ),
                {
                    "id": None if ids is None else ids[i],
                    "b": biller,
                    "c": created.strftime("%Y-%m-%d %H:%M:%S.%f"),
                    "s": status,
                    "r": rt,
                },
            )
    engine.dispose()


def stamps(env) -> dict:
    """(level, biller, start) -> UpdatedDate of every aggregate row of the three tables."""
    engine = create_engine(env["METRICS_WAREHOUSE_URL"])
    out = {}
    with engine.connect() as conn:
        for table in (
            "DataPumpResponseTimeAggregation",
            "DataPumpErrorAggregation",
            "DataPumpTimeoutErrorAggregation",
        ):
            for r in conn.execute(
                text(
                    f'SELECT "TimeStampTypeId", "BillerId", "StartTime", "UpdatedDate" FROM "{table}"'
                )
            ):
                out[(table, r[0], r[1], str(r[2]))] = str(r[3])
    engine.dispose()
    return out


def assert_equal_to_reference(env):
    raw = read_raw([shard(env, "alpha"), shard(env, "beta")])
    raw = raw[raw["BillerId"] != 10]  # disabled
    for level_id, level in LEVELS.items():
        expected = reference(raw, level)
        got = warehouse_rows(env["METRICS_WAREHOUSE_URL"], level_id)
        for key, want in expected.items():
            if key in got:
                for field in (
                    "RequestCount",
                    "FailedRequests",
                    "TimeOutCount",
                    "TotalResponseTime",
                ):
                    assert got[key][field] == want[field], (level, key, field)
        # Every window with rows inside the computed range is in the warehouse.
        missing = [k for k in expected if k not in got and k[1] >= datetime(2025, 2, 23)]
        assert not missing, (level, missing[:5])


def cursors(env) -> dict:
    return WarehouseResource(url=env["METRICS_WAREHOUSE_URL"]).read_cursors(DATAPUMP)


def test_late_rows_hours_days_and_weeks_old_are_counted_by_the_next_refresh(env, capsys):
    assert main(["materialize", *WINDOW], environ=env) == 0
    started = cursors(env)
    assert set(started) == {"alpha", "beta"}  # materialize gave every shard a cursor
    assert refresh_cycle(environ=env, now=NOW) == 0
    before = stamps(env)

    late = [
        (7, datetime(2025, 3, 3, 9, 30), "500", 120.0),  # three hours old
        (8, datetime(2025, 3, 1, 5, 15), "200", 80.0),  # days old
        (7, datetime(2025, 2, 24, 3, 0), "504", 40000.0),  # last week: another week
    ]
    insert(env, "alpha", late)
    insert(env, "beta", [(9, datetime(2025, 3, 2, 23, 59, 59), "200", 10.0)])
    assert refresh_cycle(environ=env, now=NOW) == 0
    out = capsys.readouterr().out
    assert "4 older hour(s) with late or changed rows" in out, out
    assert_equal_to_reference(env)

    after = stamps(env)
    changed = {k for k in after if after[k] != before.get(k)}
    cells = {
        (7, "2025-03-03 09:00:00"),
        (8, "2025-03-01 05:00:00"),
        (7, "2025-02-24 03:00:00"),
        (9, "2025-03-02 23:00:00"),
    }
    days = {
        (7, "2025-03-03 00:00:00"),
        (8, "2025-03-01 00:00:00"),
        (7, "2025-02-24 00:00:00"),
        (9, "2025-03-02 00:00:00"),
    }
    weeks = {
        (7, "2025-03-02 00:00:00"),
        (8, "2025-02-23 00:00:00"),
        (7, "2025-02-23 00:00:00"),
        (9, "2025-03-02 00:00:00"),
    }
    expected = {1: cells, 2: days, 3: weeks}
    for table, level, biller, start in changed:
        assert (biller, start[:19]) in expected[level], (table, level, biller, start)
    for level, keys in expected.items():  # and each of them did change, in all three tables
        for biller, start in keys:
            assert any(
                k[1] == level and k[2] == biller and k[3].startswith(start) for k in changed
            ), (level, biller, start)
    assert cursors(env)["alpha"].position > started["alpha"].position


def test_a_row_committed_late_with_a_lower_id_is_counted(env):
    engine = create_engine(shard(env, "alpha"))
    with engine.begin() as conn:
        top = conn.execute(text('SELECT MAX("DataPumpDetailId") FROM "DataPumpDetail"')).scalar()
        conn.execute(
            text('DELETE FROM "DataPumpDetail" WHERE "DataPumpDetailId" = :i'), {"i": top - 3}
        )
    engine.dispose()
    assert main(["materialize", *WINDOW], environ=env) == 0
    assert refresh_cycle(environ=env, now=NOW) == 0
    # A transaction that took Id top-3 commits only now, after the cursor passed it.
    insert(env, "alpha", [(8, datetime(2025, 3, 2, 4, 20), "404", 30.0)], ids=[top - 3])
    assert refresh_cycle(environ=env, now=NOW) == 0
    assert_equal_to_reference(env)


def test_an_unreachable_shard_keeps_its_cursor_and_is_read_once_it_answers(env, tmp_path, capsys):
    assert main(["materialize", *WINDOW], environ=env) == 0
    assert refresh_cycle(environ=env, now=NOW) == 0
    insert(env, "beta", [(9, datetime(2025, 3, 1, 8, 0), "200", 10.0)])
    at = cursors(env)["beta"]
    path = tmp_path / "beta.db"
    os.rename(path, tmp_path / "beta_away.db")
    assert refresh_cycle(environ=env, now=NOW) == 1
    assert "biller 9" in capsys.readouterr().err
    assert cursors(env)["beta"] == at
    os.rename(tmp_path / "beta_away.db", path)
    assert refresh_cycle(environ=env, now=NOW) == 0
    assert_equal_to_reference(env)
    assert cursors(env)["beta"].position > at.position


def test_a_crash_between_the_rows_and_the_cursor_leaves_neither(env, capsys):
    assert main(["materialize", *WINDOW], environ=env) == 0
    assert refresh_cycle(environ=env, now=NOW) == 0
    at = cursors(env)
    insert(env, "alpha", [(7, datetime(2025, 3, 1, 2, 0), "500", 10.0)])
    wh = create_engine(env["METRICS_WAREHOUSE_URL"])
    with wh.begin() as conn:
        conn.execute(
            text(
                'CREATE TRIGGER crash BEFORE UPDATE ON "SourceCursor" '
                "BEGIN SELECT RAISE(ABORT, 'power cut'); END"
            )
        )
    before = warehouse_rows(env["METRICS_WAREHOUSE_URL"], 1)[(7, datetime(2025, 3, 1, 2))]
    assert refresh_cycle(environ=env, now=NOW) == 1
    assert cursors(env) == at
    # The cell written in the same transaction as the cursor rolled back with it.
    assert warehouse_rows(env["METRICS_WAREHOUSE_URL"], 1)[(7, datetime(2025, 3, 1, 2))] == before
    with wh.begin() as conn:
        conn.execute(text("DROP TRIGGER crash"))
    wh.dispose()
    assert refresh_cycle(environ=env, now=NOW) == 0
    assert_equal_to_reference(env)


def test_a_new_shard_reads_only_the_initial_look_back(env, tmp_path):
    assert main(["materialize", *WINDOW], environ=env) == 0
    now = datetime.utcnow()
    catalog = create_engine(env["METRICS_CATALOG_URL"])
    with catalog.begin() as conn:
        conn.execute(
            text(
                'INSERT INTO "BillerElasticOptions" ("BillerId", "BillerName", "ShardName", '
                "\"IsDataPumpEnabled\") VALUES (11, 'New', 'gamma', 1)"
            )
        )
    catalog.dispose()
    engine = create_engine(shard(env, "gamma"))
    md = MetaData()
    detail_table(ShardNames(), md), occupancy_table(ShardNames(), md)
    md.create_all(engine)
    engine.dispose()
    recent = now - timedelta(minutes=5)
    insert(env, "gamma", [(11, recent, "200", 10.0), (11, now - timedelta(days=2), "200", 10.0)])
    assert refresh_cycle(environ=env, now=now) == 0
    hourly = warehouse_rows(env["METRICS_WAREHOUSE_URL"], 1)
    assert hourly[(11, recent.replace(minute=0, second=0, microsecond=0))]["RequestCount"] == 1
    old = (now - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    assert (11, old) not in hourly  # older history is the backlog's
    assert "gamma" in cursors(env)


def test_reconciliation_finds_deleted_and_corrected_rows_and_the_refresh_repairs_them(
    env, monkeypatch
):
    from dagster import DagsterInstance

    from metrics_pipeline.definitions import build_definitions

    assert main(["materialize", *WINDOW], environ=env) == 0
    engine = create_engine(shard(env, "alpha"))
    with engine.begin() as conn:
        ids = [
            r[0]
            for r in conn.execute(
                text(
                    'SELECT "DataPumpDetailId" FROM "DataPumpDetail" WHERE "BillerId" = 7 '
                    'ORDER BY "DataPumpDetailId" LIMIT 2'
                )
            )
        ]
        conn.execute(
            text('DELETE FROM "DataPumpDetail" WHERE "DataPumpDetailId" = :i'), {"i": ids[0]}
        )
        conn.execute(
            text(
                'UPDATE "DataPumpDetail" SET "StatusCode" = \'599\' WHERE "DataPumpDetailId" = :i'
            ),
            {"i": ids[1]},
        )
    engine.dispose()
    # No cursor sees a delete or an update: the refresh alone leaves the hours as they were.
    assert refresh_cycle(environ=env, now=NOW) == 0
    monkeypatch.setenv("METRICS_RECONCILE_DAYS", "1000")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    job = build_definitions(env, resolve=True).resolve_job_def("reconciliation_job")
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance)
    [check] = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert not check.passed and check.metadata["cells_marked_stale"].value in (1, 2)
    assert set(check.metadata["stale_by_biller"].value) == {"7"}
    assert refresh_cycle(environ=env, now=NOW) == 0
    assert_equal_to_reference(env)
    stale = WarehouseResource(url=env["METRICS_WAREHOUSE_URL"]).read_ledger(
        DATAPUMP, HOURLY, states=("stale",)
    )
    assert stale == {}
