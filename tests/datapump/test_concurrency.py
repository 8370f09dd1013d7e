"""Writers at the same time: several processes writing the same new keys, creating the schema,
or materializing the same window all end well, with exactly one row per key."""

import multiprocessing
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from metrics_pipeline.coverage import LedgerEntry
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import HOURLY, partial_from_rows
from tests.support import sqlite_environment

WRITERS = 4
HOURS = [datetime(2025, 3, 1, h) for h in range(24)]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/wh.db"
    return request.getfixturevalue("pg_databases").create()


def _write(url: str, barrier, seed: int, results) -> None:
    try:
        wh = WarehouseResource(url=url)
        wh.ensure_schema()
        barrier.wait(timeout=60)
        # Every writer writes the same new keys at the same moment.
        partials = {
            (b, h): partial_from_rows([("200", float(seed))] * 3) for b in (1, 2) for h in HOURS
        }
        ledger = [LedgerEntry(str(b), h, "written", source_rows=3) for b, h in partials]
        wh.write_partials(HOURLY, partials, ledger, run_id=f"writer-{seed}")
        results.put(("ok", seed))
    except Exception as exc:  # reported to the test, which fails naming it
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def test_concurrent_writers_of_the_same_new_keys_all_succeed(warehouse_url):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(WRITERS), ctx.Queue()
    procs = [
        ctx.Process(target=_write, args=(warehouse_url, barrier, i, results))
        for i in range(WRITERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    outcomes = [results.get(timeout=5) for _ in procs]
    assert [o for o in outcomes if o[0] != "ok"] == []
    engine = create_engine(warehouse_url)
    with engine.connect() as conn:
        for table in (
            "DataPumpResponseTimeAggregation",
            "DataPumpErrorAggregation",
            "DataPumpTimeoutErrorAggregation",
        ):
            dupes = conn.execute(
                text(
                    f'SELECT COUNT(*) FROM (SELECT "BillerId" FROM "{table}" GROUP BY "BillerId", '
                    '"TimeStampTypeId", "StartTime" HAVING COUNT(*) > 1) d'
                )
            ).scalar()
            rows = conn.execute(text(f'SELECT COUNT(*) FROM "{table}"')).scalar()
            assert (dupes, rows) == (0, 2 * len(HOURS)), table
        ledger = conn.execute(text('SELECT COUNT(*) FROM "CoverageLedger"')).scalar()
        # Each key holds one writer's values, whole (the last transaction to commit).
        totals = {
            r[0]
            for r in conn.execute(
                text('SELECT "TotalResponseTime" FROM "DataPumpResponseTimeAggregation"')
            )
        }
    engine.dispose()
    assert ledger == 2 * len(HOURS)
    assert len(totals) == 1


def test_concurrent_materialize_of_the_same_window_all_succeed(tmp_path):
    """Two operators (or a schedule run and a backfill) materialize the same window at once."""
    env = sqlite_environment(tmp_path, per_hour=2)
    script = Path(sys.executable).parent / "metrics-pipeline"
    window = ["--start", "2025-03-02T00:00Z", "--end", "2025-03-02T06:00Z"]
    procs = [
        subprocess.Popen(
            [str(script), "materialize", *window],
            env={**os.environ, **env, "DAGSTER_HOME": str(tmp_path / f"home{i}")},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-2000:] for o in outs]
    engine = create_engine(env["METRICS_WAREHOUSE_URL"])
    with engine.connect() as conn:
        dupes = conn.execute(
            text(
                'SELECT COUNT(*) FROM (SELECT 1 FROM "DataPumpErrorAggregation" GROUP BY "BillerId", '
                '"TimeStampTypeId", "StartTime" HAVING COUNT(*) > 1) d'
            )
        ).scalar()
        hours = conn.execute(
            text('SELECT COUNT(*) FROM "DataPumpErrorAggregation" WHERE "TimeStampTypeId" = 1')
        ).scalar()
    engine.dispose()
    assert dupes == 0 and hours == 3 * 168  # billers 7, 8, 9 x the widened week


def _schema(url: str, barrier, results) -> None:
    try:
        wh = WarehouseResource(url=url)
        barrier.wait(timeout=60)
        wh.ensure_schema()
        results.put("ok")
    except Exception as exc:
        results.put(f"{type(exc).__name__}: {exc}")


def test_concurrent_schema_creation_is_race_free(warehouse_url):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(WRITERS), ctx.Queue()
    procs = [
        ctx.Process(target=_schema, args=(warehouse_url, barrier, results)) for _ in range(WRITERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert sorted(results.get(timeout=5) for _ in procs) == ["ok"] * WRITERS
    engine = create_engine(warehouse_url)
    with engine.connect() as conn:
        assert conn.execute(text('SELECT COUNT(*) FROM "TimeStampType"')).scalar() == 3
        assert conn.execute(text('SELECT COUNT(*) FROM "MetricType"')).scalar() == 8
    engine.dispose()
