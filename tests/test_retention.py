"""Retention: the horizons, the bounded deletes (T-SQL too), and the daily job as Definitions
holds it on real SQLite and PostgreSQL warehouses and a Dagster instance."""

from datetime import datetime, timedelta

import pytest
import sqlglot
from dagster import DagsterInstance, job, op
from sqlalchemy import DateTime, Integer, Numeric, String, func, select
from sqlalchemy.dialects import mssql

from metrics_pipeline.availability.sql import build_tables as availability_tables
from metrics_pipeline.clock import utc_now
from metrics_pipeline.collected.rules import hour_start
from metrics_pipeline.collected.store import CollectedStore
from metrics_pipeline.definitions import build_definitions
from metrics_pipeline.resources.engines import ConfigurationError, create_db_engine
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.retention import RetentionSettings, delete_runs, horizons
from metrics_pipeline.sql.retention import delete_batch
from metrics_pipeline.sql.warehouse import build_warehouse
from metrics_pipeline.tags import REFRESH_TAG

NOW = datetime(2026, 12, 2, 12, 30)


def test_horizons_are_whole_hours_and_never_inside_the_late_point_window():
    cut = horizons(RetentionSettings(), NOW, 7 * 86400)
    assert cut == {
        "CollectedMetric": datetime(2026, 11, 2, 12),
        "AvailabilityMinute": datetime(2026, 9, 3, 12),
        "CoverageLedger": datetime(2025, 10, 28, 12),
    }
    short = horizons(RetentionSettings(collected_raw_days=1), NOW, 7 * 86400)
    assert short["CollectedMetric"] == datetime(2026, 11, 25, 12)


def test_settings_from_the_environment():
    s = RetentionSettings.from_env({"METRICS_RETENTION_COLLECTED_RAW_DAYS": "10"})
    assert (s.collected_raw_days, s.ledger_days) == (10, 400)
    with pytest.raises(ConfigurationError, match="METRICS_RETENTION_BATCH_ROWS"):
        RetentionSettings.from_env({"METRICS_RETENTION_BATCH_ROWS": "0"})
    with pytest.raises(ConfigurationError, match="retention settings"):
        RetentionSettings.from_env({"METRICS_RETENTION_LEDGER_DAYS": "a year"})


def test_the_deletes_are_tsql():
    ledger = build_warehouse().ledger
    for statement in (
        delete_batch(ledger, ledger.c.CoverageLedgerId, ledger.c.StartTime, NOW, 500),
    ):
        text = str(
            statement.compile(dialect=mssql.dialect(), compile_kwargs={"render_postcompile": True})
        )
        assert "LIMIT" not in text.upper()
        sqlglot.parse_one(text, read="tsql")
    first = delete_batch(ledger, ledger.c.CoverageLedgerId, ledger.c.StartTime, NOW, 500)
    text = first.compile(dialect=mssql.dialect(), compile_kwargs={"render_postcompile": True})
    assert "IN (SELECT TOP 500" in str(text)


def filler(table, i: int, when: datetime) -> dict:
    """A row of ``table`` at ``when``: distinct strings, ones for numbers."""
    row = {}
    for c in table.columns:
        if c.primary_key and c.autoincrement is not False and isinstance(c.type, Integer):
            continue
        if isinstance(c.type, DateTime):
            row[c.name] = when
        elif isinstance(c.type, String):
            row[c.name] = f"v{i}"[: c.type.length or 10]
        elif isinstance(c.type, (Integer, Numeric)):
            row[c.name] = 1
        else:
            row[c.name] = 1.0
    return row


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'warehouse.db'}"
    return request.getfixturevalue("pg_databases").create("mp_retention")


def count(engine, table, before=None):
    q = select(func.count()).select_from(table)
    time = table.c.get("CollectedAt", table.c.get("StartTime"))
    if before is not None:
        q = q.where(time < before)
    with engine.connect() as conn:
        return conn.execute(q).scalar_one()


def all_stats(store):
    with store.engine.connect() as conn:
        return {
            name: sorted(tuple(r) for r in conn.execute(select(table)))
            for name, table in (("all", store.t.hourly), ("app", store.t.app_hourly))
        }


def test_the_retention_job_deletes_what_is_old_and_keeps_every_statistic(
    warehouse_url, tmp_path, capsys
):
    env = {
        "METRICS_WAREHOUSE_URL": warehouse_url,
        "METRICS_DATA_DIR": str(tmp_path),
        "METRICS_RETENTION_BATCH_ROWS": "7",
        "METRICS_RETENTION_RUN_HISTORY_DAYS": "0",
    }
    WarehouseResource(url=warehouse_url).ensure_schema()
    engine = create_db_engine(warehouse_url, "warehouse", must_exist=False)
    store = CollectedStore(engine)
    store.ensure_schema()
    avail = availability_tables()
    avail.metadata.create_all(engine)
    ledger = build_warehouse().ledger
    now = hour_start(utc_now())
    hours = [now - timedelta(days=d, hours=h) for d in (1, 29, 31, 45) for h in (0, 5)]
    points = []
    for n, start in enumerate(hours):
        for i in range(9):
            for app in ("web", "api"):
                points.append(
                    {
                        "MessageId": f"{app}/{n}-{i}",
                        "MetricKey": f"k{i % 2}",
                        "App": app,
                        "Value": float(i * n),
                        "CollectedAt": start + timedelta(minutes=i),
                        "ReceivedAt": start,
                    }
                )
    store.insert_points(points)
    store.write_hours(hours)
    before = all_stats(store)
    with engine.begin() as conn:
        for n, days in enumerate((1, 89, 91, 120, 399, 401, 500)):
            when = now - timedelta(days=days)
            conn.execute(
                avail.minute.insert(), [filler(avail.minute, n * 10 + i, when) for i in range(3)]
            )
            conn.execute(ledger.insert(), [filler(ledger, n * 10 + i, when) for i in range(3)])

    defs = build_definitions(env, resolve=True)
    with DagsterInstance.ephemeral() as instance:
        refresh = run_tagged(instance, {REFRESH_TAG: "collected"})
        other = run_tagged(instance, {})
        result = defs.resolve_job_def("retention_job").execute_in_process(instance=instance)
        assert result.success
        ids = {r.run_id for r in instance.get_runs()}
        assert refresh not in ids and other in ids
        output = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"][0]
        metadata = {k: v.value for k, v in output.event_specific_data.metadata.items()}
    raw_cut = now - timedelta(days=30)
    assert metadata["deleted CollectedMetric"] == 4 * 9 * 2
    assert metadata["deleted AvailabilityMinute"] == 5 * 3
    assert metadata["deleted CoverageLedger"] == 2 * 3
    assert metadata["deleted Dagster runs (refresh)"] == 1
    assert count(engine, store.t.raw, raw_cut) == 0 and count(engine, store.t.raw) == 4 * 9 * 2
    assert count(engine, avail.minute) == 2 * 3 and count(engine, ledger) == 5 * 3
    # Every statistic is unchanged, also after the hours are recomputed.
    assert all_stats(store) == before
    store.write_hours(hours)
    assert all_stats(store) == before
    # A second run, from the command line, finds nothing more.
    from metrics_pipeline.cli import main

    assert main(["retention"], environ=env) == 0
    assert (
        "retention: deleted 0 CollectedMetric, 0 AvailabilityMinute, 0 CoverageLedger, "
        "0 Dagster runs (refresh)" in capsys.readouterr().out
    )
    engine.dispose()


@op
def noop():
    return None


@job
def tagged_job():
    noop()


def run_tagged(instance, tags) -> str:
    return tagged_job.execute_in_process(instance=instance, tags=tags).run_id


def test_run_history_goes_page_by_page_through_the_instance_api():
    with DagsterInstance.ephemeral() as instance:
        refresh = [run_tagged(instance, {REFRESH_TAG: f"r{i}"}) for i in range(5)]
        kept = [run_tagged(instance, {"metrics/source": "cli"}) for _ in range(3)]
        assert (
            delete_runs(instance, utc_now() - timedelta(days=1), 2, lambda t: REFRESH_TAG in t) == 0
        )
        cutoff = utc_now() + timedelta(seconds=5)
        assert delete_runs(instance, cutoff, 2, lambda t: REFRESH_TAG in t) == 5
        assert {r.run_id for r in instance.get_runs()} == set(kept)
        assert not set(refresh) & {r.run_id for r in instance.get_runs()}


def test_definitions_hold_the_job_and_its_daily_schedule():
    defs = build_definitions({"METRICS_RETENTION_CRON": "5 4 * * *"})
    schedule = defs.resolve_schedule_def("retention_schedule")
    assert schedule.cron_schedule == "5 4 * * *" and schedule.job_name == "retention_job"
    assert defs.resolve_job_def("retention_job")
