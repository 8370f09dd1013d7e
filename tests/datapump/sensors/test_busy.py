"""Busy shards, unreachable shards, retries, the backlog backfill and the job log, on a real
Dagster instance and real SQLite and PostgreSQL shards."""

import os
import threading
import time
import uuid
from datetime import datetime, timedelta

import pytest
from dagster import AssetKey, build_sensor_context, instance_for_test
from sqlalchemy import create_engine, text

from metrics_pipeline.cli import main
from metrics_pipeline.coverage import DATAPUMP, LedgerEntry
from metrics_pipeline.datapump.refresh import range_tags
from metrics_pipeline.definitions import build_definitions, build_resources
from metrics_pipeline.partitions import parse_partitions_start
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import HOURLY
from metrics_pipeline.tags import RANGE_END, RANGE_START
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


START = parse_partitions_start(None)


@pytest.fixture
def instance():
    with instance_for_test() as inst:
        yield inst


def sensor(env, name: str):
    return build_definitions(env, resolve=True).resolve_sensor_def(name)


def evaluate(env, instance, name: str, cursor=None):
    resources = build_resources(env, resolve=True)
    with build_sensor_context(
        instance=instance,
        resources=resources,
        cursor=cursor,
        repository_def=build_definitions(env, resolve=True).get_repository_def(),
    ) as ctx:
        return sensor(env, name)(ctx)


def ledger_states(env, biller: int) -> set[str]:
    wh = WarehouseResource(url=env["METRICS_WAREHOUSE_URL"])
    rows = wh.read_ledger(DATAPUMP, HOURLY, HOURS[0], HOURS[-1] + HOURLY.length)
    return {rows[h][str(biller)].state for h in HOURS}


def coverage_checks(result) -> list:
    return [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.event_specific_data.check_name == "coverage"
    ]


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


def hours_range() -> dict:
    return range_tags(HOURLY, START, HOURS[0], HOURS[-1])


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


def test_biller_busy_at_first_and_free_later_succeeds_in_the_same_run(env, instance):
    set_processing(env, "alpha", 8, True)
    threading.Timer(0.3, set_processing, args=(env, "alpha", 8, False)).start()
    result = run_hourly(env, instance, hours_range())
    assert result.success
    assert hourly_billers(env) == {7: 2, 8: 2, 9: 2}
    [log] = job_log(env)
    assert (log["BillersProcessed"], log["BillersSkippedBusy"], log["BillersFailed"]) == (3, 0, 0)
    assert log["RunId"] == result.run_id and log["Summary"].startswith("Job Succeeded")


def test_biller_busy_all_run_succeeds_skipping_it_then_the_sensor_retries_it(env, instance):
    set_processing(env, "alpha", 8, True)
    started = time.monotonic()
    result = run_hourly(env, instance, hours_range())
    # Busy is routine (seed 000): the run succeeds, the busy biller is skipped and carried.
    assert result.success
    assert instance.get_run_by_id(result.run_id).status.value == "SUCCESS"
    assert not any(e.is_step_failure for e in result.all_events)
    assert time.monotonic() - started < 30  # the wait is bounded (2 retries x 0.5 s)
    assert hourly_billers(env) == {7: 2, 9: 2}  # the others went on
    run = instance.get_run_by_id(result.run_id)
    assert run.tags["metrics/failure"] == "shard busy"
    assert run.tags["metrics/busy_billers"] == "8"
    skipped = [
        e.message for e in instance.all_logs(result.run_id) if "skipped, shard busy" in e.message
    ]
    assert len(skipped) == 1 and "8 (alpha)" in skipped[0]
    assert ledger_states(env, 8) == {"busy"} and ledger_states(env, 7) == {"written"}
    # Every hour's coverage check names the busy biller; the partitions hold the others' rows.
    checks = coverage_checks(result)
    assert [c.partition for c in checks] == [f"{h:%Y-%m-%d-%H:%M}" for h in HOURS]
    for check in checks:
        assert not check.passed and check.severity.value == "WARN"
        assert "8" in check.metadata["missing_billers"].value
        assert "busy" in check.metadata["missing_billers"].value["8"]
    mats = result.asset_materializations_for_node("hourly_aggregates")
    assert {m.partition for m in mats} == {c.partition for c in checks}
    [log] = job_log(env)
    assert (log["BillersProcessed"], log["BillersSkippedBusy"], log["BillersFailed"]) == (2, 1, 0)
    assert log["ShardIdWithFailures"] == "alpha"
    assert log["Summary"].startswith("Job Succeeded") and "skipped busy: 8" in log["Summary"]

    waiting = evaluate(env, instance, "shard_retry_sensor")
    assert (
        not waiting.run_requests and "waiting for billers [8]" in waiting.skip_reason.skip_message
    )

    set_processing(env, "alpha", 8, False)
    result = evaluate(env, instance, "shard_retry_sensor", cursor=waiting.cursor)
    [request] = result.run_requests
    assert request.job_name == "hourly_job"
    assert request.tags[RANGE_START] == f"{HOURS[0]:%Y-%m-%d-%H:%M}"
    assert request.tags[RANGE_END] == f"{HOURS[-1]:%Y-%m-%d-%H:%M}"
    assert request.tags["metrics/billers"] == "8"  # only the busy biller is computed again
    before = job_log(env)
    retry = run_hourly(env, instance, request.tags)
    assert retry.success
    assert [r["BillersProcessed"] for r in job_log(env)] == [
        r["BillersProcessed"] for r in before
    ] + [1]
    again = evaluate(env, instance, "shard_retry_sensor", cursor=result.cursor)
    assert not again.run_requests  # the ledger says written: nothing left to retry
    assert hourly_billers(env) == {7: 2, 8: 2, 9: 2}
    assert ledger_states(env, 8) == {"written"}
    assert all(c.passed for c in coverage_checks(retry))


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
    result = run_hourly(env, instance, hours_range())
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

    assert ledger_states(env, 9) == {"unreachable"}

    monkeypatch.setenv("METRICS_RETRY_BACKOFF_S", "0")
    still_down = evaluate(env, instance, "shard_retry_sensor")
    assert not still_down.run_requests and "[9]" in still_down.skip_reason.skip_message
    move_shard(env, "beta", away=False)
    monkeypatch.setenv("METRICS_RETRY_BACKOFF_S", "3600")
    backing_off = evaluate(env, instance, "shard_retry_sensor", cursor=still_down.cursor)
    assert not backing_off.run_requests  # one failed probe: backing off for an hour
    monkeypatch.setenv("METRICS_RETRY_BACKOFF_S", "0")
    result = evaluate(env, instance, "shard_retry_sensor", cursor=backing_off.cursor)
    [request] = result.run_requests
    assert request.tags["metrics/retry_reason"] == "unreachable"
    assert request.tags["metrics/billers"] == "9"
    assert run_hourly(env, instance, request.tags).success
    assert hourly_billers(env) == {7: 2, 8: 2, 9: 2}


def test_unreachable_warehouse_fails_cleanly_and_the_next_run_repairs(env, instance):
    down = {**env, "METRICS_WAREHOUSE_URL": "postgresql://nobody@127.0.0.1:1/warehouse"}
    result = run_hourly(down, instance, hours_range())
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_failure_data.user_failure_data.description.startswith(
        "warehouse unreachable at postgresql://nobody@127.0.0.1:1/warehouse"
    )
    assert run_hourly(env, instance, hours_range()).success
    assert hourly_billers(env) == {7: 2, 8: 2, 9: 2}


def test_backlog_sensor_launches_one_backfill_for_incomplete_hours(env, instance, monkeypatch):
    now = datetime.utcnow()
    monkeypatch.setenv("METRICS_BACKLOG_LOOKBACK_HOURS", "24")
    monkeypatch.setenv("METRICS_BACKLOG_SETTLE_HOURS", "2")
    monkeypatch.setenv("METRICS_BACKLOG_ALERT_THRESHOLD", "10")
    end = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    start = end - timedelta(days=1)
    # Every biller's hours but the last three are written; in one of those, biller 9 is too.
    assert run_hourly(
        env, instance, range_tags(HOURLY, START, start, end - timedelta(hours=4))
    ).success
    last = end - timedelta(hours=1)
    assert run_hourly(
        env, instance, {**range_tags(HOURLY, START, last, last), "metrics/billers": "9"}
    ).success
    result = evaluate(env, instance, "backlog_sensor")
    [request] = result.run_requests
    subset = request.asset_graph_subset
    hourly = subset.get_partitions_subset(AssetKey("timeout_rate_hourly")).get_partition_keys()
    assert sorted(hourly) == [f"{end - timedelta(hours=h):%Y-%m-%d-%H:%M}" for h in (3, 2, 1)]
    daily = subset.get_partitions_subset(AssetKey("error_rate_daily")).get_partition_keys()
    assert set(daily) == {f"{(end - timedelta(hours=h)):%Y-%m-%d}" for h in (3, 2, 1)}
    assert request.tags["metrics/backlog"] == "true"
    assert request.tags["metrics/scope"] == "incomplete"
    [check] = result.asset_events
    assert check.passed and check.metadata["missing_biller_hours"].value == 3 * 3 - 1

    # A run of the backfill computes only the billers not yet written in its hours.
    tags = {
        **range_tags(HOURLY, START, end - timedelta(hours=3), last),
        "metrics/scope": "incomplete",
    }
    before = hourly_billers(env)
    backfill_run = run_hourly(env, instance, tags)
    assert backfill_run.success
    [log] = job_log(env)[-1:]
    assert log["BillersProcessed"] == 3  # billers 7 and 8 for 3 hours, biller 9 for 2
    tags = instance.get_run_by_id(backfill_run.run_id).tags
    assert tags["metrics/run_biller_windows"] == str(3 * 3 - 1)
    # Each hour's own figures: the last hour wrote billers 7 and 8 (9 was written before).
    mats = backfill_run.asset_materializations_for_node("hourly_aggregates")
    mine = {m.partition: m.metadata for m in mats if m.asset_key == AssetKey("error_rate_hourly")}
    assert mine[f"{last:%Y-%m-%d-%H:%M}"]["billers_written"].value == 2
    assert mine[f"{last:%Y-%m-%d-%H:%M}"]["billers_not_written"].value == 0
    assert hourly_billers(env) == {b: n + 3 for b, n in before.items() if b != 9} | {
        9: before[9] + 2
    }
    assert not evaluate(env, instance, "backlog_sensor").run_requests

    monkeypatch.setenv("METRICS_BACKLOG_ALERT_THRESHOLD", "0")
    wh = WarehouseResource(url=env["METRICS_WAREHOUSE_URL"])
    wh.record_ledger(DATAPUMP, HOURLY, [LedgerEntry("7", last, "failed", "boom")])
    result = evaluate(env, instance, "backlog_sensor")
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


def test_a_busy_hour_of_any_age_is_retried_and_counted_by_the_backlog(env, instance, monkeypatch):
    """No horizon: an hour left busy ten days ago (far beyond the backlog's and the old retry
    look-backs) is retried once the flag clears, and the backlog check counts it meanwhile."""
    monkeypatch.setenv("METRICS_BACKLOG_LOOKBACK_HOURS", "24")
    now = datetime.utcnow()
    old = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=10)
    set_processing(env, "alpha", 8, True)
    assert run_hourly(env, instance, range_tags(HOURLY, START, old, old + HOURLY.length)).success
    wh = WarehouseResource(url=env["METRICS_WAREHOUSE_URL"])
    # The entry was recorded ten days ago and never touched since.
    entries = wh.read_ledger(DATAPUMP, HOURLY, old, old + 2 * HOURLY.length)
    wh.record_ledger(
        DATAPUMP,
        HOURLY,
        [entries[h]["8"] for h in (old, old + HOURLY.length)],
        now=old + timedelta(hours=2),
    )
    [check] = evaluate(env, instance, "backlog_sensor").asset_events
    assert not check.passed and check.severity.value == "WARN"
    assert check.metadata["older_retryable_biller_hours"].value == 2
    assert check.metadata["oldest_retryable_hour"].value == old.isoformat()

    waiting = evaluate(env, instance, "shard_retry_sensor")
    assert not waiting.run_requests and "[8]" in waiting.skip_reason.skip_message
    set_processing(env, "alpha", 8, False)
    result = evaluate(env, instance, "shard_retry_sensor", cursor=waiting.cursor)
    [request] = result.run_requests
    assert request.tags[RANGE_START] == f"{old:%Y-%m-%d-%H:%M}"
    assert request.tags[RANGE_END] == f"{old + HOURLY.length:%Y-%m-%d-%H:%M}"
    assert request.tags["metrics/billers"] == "8"
    assert run_hourly(env, instance, request.tags).success
    states = wh.read_ledger(DATAPUMP, HOURLY, old, old + 2 * HOURLY.length)
    assert {states[h]["8"].state for h in states} == {"written"}
    assert not evaluate(env, instance, "shard_retry_sensor", cursor=result.cursor).run_requests


def test_retry_sensor_bounds_the_hours_it_requests_per_tick(env, instance, monkeypatch):
    monkeypatch.setenv("METRICS_RETRY_MAX_HOURS", "3")
    first = datetime(2025, 3, 1)
    wh = WarehouseResource(url=env["METRICS_WAREHOUSE_URL"])
    hours = [first + timedelta(hours=h) for h in (0, 1, 2, 5, 6)]
    wh.record_ledger(DATAPUMP, HOURLY, [LedgerEntry("8", h, "busy", "busy") for h in hours])
    [request] = evaluate(env, instance, "shard_retry_sensor").run_requests
    # The oldest three hours, one contiguous run; the rest on a later tick.
    assert request.tags[RANGE_START] == f"{hours[0]:%Y-%m-%d-%H:%M}"
    assert request.tags[RANGE_END] == f"{hours[2]:%Y-%m-%d-%H:%M}"
