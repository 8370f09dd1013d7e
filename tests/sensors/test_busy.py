"""Busy shards, unreachable shards, retries, the backlog backfill and the job log, on a real
Dagster instance and real SQLite and PostgreSQL shards."""

import os
import threading
import time
import uuid
from datetime import datetime, timedelta

import pytest
from dagster import (
    AssetKey,
    AssetPartitionStatus,
    SkipReason,
    build_sensor_context,
    instance_for_test,
)
from sqlalchemy import create_engine, text

from metrics_pipeline.cli import main
from metrics_pipeline.definitions import build_definitions
from metrics_pipeline.partitions import hourly_partitions
from metrics_pipeline.refresh import RANGE_END, RANGE_START
from metrics_pipeline.resources import build_resources
from metrics_pipeline.sensors.backlog import backlog_sensor
from metrics_pipeline.sensors.shard_retry import shard_retry_sensor
from tests.support import (
    PG_ADMIN_URL,
    WINDOW_START,
    create_sources,
    read_raw,
    reference,
    warehouse_rows,
)

HOURS = [WINDOW_START + timedelta(hours=h) for h in (10, 11)]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def env(request, tmp_path):
    if request.param == "sqlite":
        e = {
            "METRICS_CATALOG_URL": f"sqlite:///{tmp_path}/catalog.db",
            "METRICS_SHARD_URL_TEMPLATE": f"sqlite:///{tmp_path}/{{shard}}.db",
        }
    else:
        dbs = request.getfixturevalue("pg_databases")
        prefix = f"mp_{uuid.uuid4().hex[:8]}"
        e = {"METRICS_CATALOG_URL": dbs.create_named(f"{prefix}_catalog")}
        for shard in ("alpha", "beta"):
            dbs.create_named(f"{prefix}_{shard}")
        e["METRICS_SHARD_URL_TEMPLATE"] = e["METRICS_CATALOG_URL"].replace(
            f"{prefix}_catalog", f"{prefix}_{{shard}}"
        )
    e["METRICS_WAREHOUSE_URL"] = f"sqlite:///{tmp_path}/warehouse.db"
    e["METRICS_BUSY_RETRIES"] = "2"
    e["METRICS_BUSY_RETRY_DELAY_S"] = "0.5"
    e["METRICS_DATA_DIR"] = str(tmp_path / "data")
    create_sources(e["METRICS_CATALOG_URL"], lambda s: shard_url(e, s), per_hour=4)
    return e


@pytest.fixture
def instance():
    with instance_for_test() as inst:
        inst.add_dynamic_partitions("billers", ["7", "8", "9"])
        yield inst


def shard_url(env, shard: str) -> str:
    return env["METRICS_SHARD_URL_TEMPLATE"].replace("{shard}", shard)


def set_processing(env, shard: str, biller: int, busy: bool) -> None:
    engine = create_engine(shard_url(env, shard))
    with engine.begin() as conn:
        conn.execute(
            text('UPDATE "BillerDataPump" SET "Processing" = :p WHERE "BillerId" = :b'),
            {"p": busy, "b": biller},
        )
    engine.dispose()


def rectangle(first: int, last: int) -> dict:
    return {
        RANGE_START: f"{first}|{HOURS[0]:%Y-%m-%d-%H:%M}",
        RANGE_END: f"{last}|{HOURS[-1]:%Y-%m-%d-%H:%M}",
    }


def run_hourly(env, instance, tags):
    defs = build_definitions(env, resolve=True)
    return defs.resolve_job_def("hourly_job").execute_in_process(
        instance=instance, tags=tags, raise_on_error=False
    )


def hourly_billers(env) -> dict[int, int]:
    engine = create_engine(env["METRICS_WAREHOUSE_URL"])
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                'SELECT "BillerId", COUNT(*) FROM "DataPumpErrorAggregation" '
                'WHERE "TimeStampTypeId" = 1 GROUP BY "BillerId"'
            )
        ).all()
    engine.dispose()
    return dict(rows)


def job_log(env) -> list[dict]:
    engine = create_engine(env["METRICS_WAREHOUSE_URL"])
    with engine.connect() as conn:
        rows = (
            conn.execute(
                text(
                    'SELECT * FROM "DataPumpMetricAggregationJobLog" '
                    'ORDER BY "DataPumpMetricAggregationJobLogId"'
                )
            )
            .mappings()
            .all()
        )
    engine.dispose()
    return [dict(r) for r in rows]


def statuses(instance, biller: int) -> set:
    keys = [f"{biller}|{h:%Y-%m-%d-%H:%M}" for h in HOURS]
    got = instance.get_status_by_partition(AssetKey("error_rate_hourly"), keys, hourly_partitions)
    return set(got.values())


def test_biller_busy_at_first_and_free_later_succeeds_in_the_same_run(env, instance):
    set_processing(env, "alpha", 8, True)
    threading.Timer(0.3, set_processing, args=(env, "alpha", 8, False)).start()
    result = run_hourly(env, instance, rectangle(7, 9))
    assert result.success
    assert hourly_billers(env) == {7: 2, 8: 2, 9: 2}
    [log] = job_log(env)
    assert (log["BillersProcessed"], log["BillersSkippedBusy"], log["BillersFailed"]) == (3, 0, 0)
    assert log["RunId"] == result.run_id and log["Summary"].startswith("Job Succeeded")


def test_biller_busy_all_run_fails_as_busy_then_the_sensor_retries_it(env, instance):
    set_processing(env, "alpha", 8, True)
    started = time.monotonic()
    result = run_hourly(env, instance, rectangle(7, 9))
    assert not result.success
    assert time.monotonic() - started < 30  # the wait is bounded (2 retries x 0.5 s)
    assert hourly_billers(env) == {7: 2, 9: 2}  # the others went on
    run = instance.get_run_by_id(result.run_id)
    assert run.tags["metrics/failure"] == "shard busy"
    assert run.tags["metrics/busy_billers"] == "8"
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "shard busy" in failure.step_failure_data.user_failure_data.description
    assert statuses(instance, 8) == {AssetPartitionStatus.FAILED}
    assert statuses(instance, 7) == {AssetPartitionStatus.MATERIALIZED}
    [log] = job_log(env)
    assert (log["BillersProcessed"], log["BillersSkippedBusy"], log["BillersFailed"]) == (2, 1, 0)
    assert log["ShardIdWithFailures"] == "alpha" and "shard busy" in log["Summary"]

    resources = build_resources(env, resolve=True)
    ctx = build_sensor_context(instance=instance, resources=resources)
    with ctx:
        waiting = shard_retry_sensor(ctx)
    assert isinstance(waiting, SkipReason) and "waiting for billers [8]" in waiting.skip_message

    set_processing(env, "alpha", 8, False)
    with build_sensor_context(instance=instance, resources=resources) as ctx:
        [request] = shard_retry_sensor(ctx)
    assert request.job_name == "hourly_job"
    assert request.tags[RANGE_START] == f"8|{HOURS[0]:%Y-%m-%d-%H:%M}"
    assert request.tags[RANGE_END] == f"8|{HOURS[-1]:%Y-%m-%d-%H:%M}"
    assert request.tags["metrics/retry_of"] == result.run_id
    assert run_hourly(env, instance, request.tags).success
    with build_sensor_context(instance=instance, resources=resources) as ctx:
        again = shard_retry_sensor(ctx)
    assert isinstance(again, SkipReason)  # never a second request for the same failure
    assert hourly_billers(env) == {7: 2, 8: 2, 9: 2}
    assert statuses(instance, 8) == {AssetPartitionStatus.MATERIALIZED}
    assert [r["BillersProcessed"] for r in job_log(env)] == [2, 1]


def move_shard(env, shard: str, away: bool) -> None:
    """Make a shard unreachable (or reachable again) for real: rename its file or database."""
    url = shard_url(env, shard)
    old, new = (shard, f"{shard}_away") if away else (f"{shard}_away", shard)
    if url.startswith("sqlite"):
        path = url.replace("sqlite:///", "")
        os.rename(path.replace(shard, old), path.replace(shard, new))
        return
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    db = url.rsplit("/", 1)[1]
    with admin.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
            {"d": db.replace(shard, old)},
        )
        conn.execute(
            text(f'ALTER DATABASE "{db.replace(shard, old)}" RENAME TO "{db.replace(shard, new)}"')
        )
    admin.dispose()


def test_unreachable_shard_fails_only_its_billers_and_is_retried_with_backoff(
    env, instance, monkeypatch
):
    move_shard(env, "beta", away=True)
    result = run_hourly(env, instance, rectangle(7, 9))
    assert not result.success
    assert hourly_billers(env) == {7: 2, 8: 2}
    run = instance.get_run_by_id(result.run_id)
    assert run.tags["metrics/failure"] == "shard unreachable"
    assert run.tags["metrics/unreachable_billers"] == "9"
    [log] = job_log(env)
    assert (log["BillersProcessed"], log["BillersFailed"], log["ShardIdWithFailures"]) == (
        2,
        1,
        "beta",
    )

    resources = build_resources(env, resolve=True)
    monkeypatch.setenv("METRICS_RETRY_BACKOFF_S", "0")
    with build_sensor_context(instance=instance, resources=resources) as ctx:
        still_down = shard_retry_sensor(ctx)
    assert isinstance(still_down, SkipReason) and "[9]" in still_down.skip_message
    move_shard(env, "beta", away=False)
    monkeypatch.setenv("METRICS_RETRY_BACKOFF_S", "3600")
    with build_sensor_context(instance=instance, resources=resources) as ctx:
        assert isinstance(shard_retry_sensor(ctx), SkipReason)  # backing off for an hour
    monkeypatch.setenv("METRICS_RETRY_BACKOFF_S", "0")
    with build_sensor_context(instance=instance, resources=resources) as ctx:
        [request] = shard_retry_sensor(ctx)
    assert request.tags["metrics/retry_reason"] == "shard unreachable"
    assert request.tags["metrics/attempt"] == "1"
    assert run_hourly(env, instance, request.tags).success
    assert hourly_billers(env) == {7: 2, 8: 2, 9: 2}


def test_unreachable_warehouse_fails_cleanly_and_the_next_run_repairs(env, instance):
    down = {**env, "METRICS_WAREHOUSE_URL": "postgresql://nobody@127.0.0.1:1/warehouse"}
    result = run_hourly(down, instance, rectangle(7, 9))
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_failure_data.user_failure_data.description.startswith(
        "warehouse unreachable at postgresql://nobody@127.0.0.1:1/warehouse"
    )
    assert run_hourly(env, instance, rectangle(7, 9)).success
    assert hourly_billers(env) == {7: 2, 8: 2, 9: 2}


def test_backlog_sensor_launches_one_backfill_for_missing_and_failed_partitions(
    env, instance, monkeypatch
):
    now = datetime.utcnow()
    monkeypatch.setenv("METRICS_BACKLOG_LOOKBACK_HOURS", "24")
    monkeypatch.setenv("METRICS_BACKLOG_SETTLE_HOURS", "2")
    monkeypatch.setenv("METRICS_BACKLOG_ALERT_THRESHOLD", "10")
    end = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    start = end - timedelta(days=1)
    # all but three hours of biller 7 are in the warehouse; billers 8 and 9 have nothing
    instance.delete_dynamic_partition("billers", "8")
    instance.delete_dynamic_partition("billers", "9")
    tags = {
        RANGE_START: f"7|{start:%Y-%m-%d-%H:%M}",
        RANGE_END: f"7|{end - timedelta(hours=4):%Y-%m-%d-%H:%M}",
    }
    assert run_hourly(env, instance, tags).success
    resources = build_resources(env, resolve=True)
    with build_sensor_context(
        instance=instance,
        resources=resources,
        repository_def=build_definitions(env, resolve=True).get_repository_def(),
    ) as ctx:
        result = backlog_sensor(ctx)
    [request] = result.run_requests
    subset = request.asset_graph_subset
    hourly = subset.get_partitions_subset(AssetKey("timeout_rate_hourly")).get_partition_keys()
    assert sorted(hourly) == [f"7|{end - timedelta(hours=h):%Y-%m-%d-%H:%M}" for h in (3, 2, 1)]
    daily = subset.get_partitions_subset(AssetKey("error_rate_daily")).get_partition_keys()
    assert set(daily) == {f"7|{(end - timedelta(hours=h)):%Y-%m-%d}" for h in (3, 2, 1)}
    assert request.tags["metrics/backlog"] == "true"
    [check] = result.asset_events
    assert check.passed  # 3 gaps, threshold 10
    monkeypatch.setenv("METRICS_BACKLOG_ALERT_THRESHOLD", "2")
    with build_sensor_context(
        instance=instance,
        resources=resources,
        repository_def=build_definitions(env, resolve=True).get_repository_def(),
    ) as ctx:
        result = backlog_sensor(ctx)
    assert not result.asset_events[0].passed
    assert result.asset_events[0].severity.value == "ERROR"


def test_cli_busy_biller_is_named_exits_nonzero_and_completes_when_free(env, capsys):
    window = ["materialize", "--start", HOURS[0].isoformat(), "--end", HOURS[-1].isoformat()]
    set_processing(env, "alpha", 8, True)
    assert main(window, environ=env) == 1
    out = capsys.readouterr()
    assert "biller 8" in out.err and "shard busy" in out.err
    assert "busy: 8" in out.out
    assert hourly_billers(env) == {7: 168, 9: 168}  # the whole week, nothing for biller 8
    set_processing(env, "alpha", 8, False)
    assert main(window, environ=env) == 0
    assert hourly_billers(env) == {7: 168, 8: 168, 9: 168}
    raw = read_raw([shard_url(env, "alpha")])
    expected = reference(raw[raw["BillerId"] == 8], "daily")
    daily = warehouse_rows(env["METRICS_WAREHOUSE_URL"], 2)
    compared = [key for key in expected if key in daily]
    assert compared  # 2025-03-01 is inside the widened window
    for key in compared:
        assert daily[key]["RequestCount"] == expected[key]["RequestCount"]
        assert daily[key]["ErrorRate"] == expected[key]["ErrorRate"]
