"""The whole busy-shard cycle driven by the real dagster-daemon, no manual step.

A biller's Processing flag is held while the refresh schedule fires: its hours are recorded busy
in the coverage ledger (the hour's coverage check names it), the others are written. The flag is
cleared: the retry sensor re-requests that biller's hours for that biller only, the refresh chain
rolls them up, and the warehouse holds complete, correct rows. The
backlog sensor launches one backfill for older missing hours, and none while it is in flight.
"""

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter
from sqlalchemy import create_engine, text

from metrics_pipeline.coverage import DATAPUMP, LedgerEntry
from metrics_pipeline.datapump.demo import DEMO_BILLERS, create_demo_data
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import HOURLY
from metrics_pipeline.up import stop_tree
from tests.support import read_raw, reference

pytestmark = pytest.mark.slow

BILLERS = DEMO_BILLERS[:2]  # 101 and 102, both in shard_east
BUSY = 102


def sql(url: str, statement: str, **params):
    if url.startswith("sqlite"):  # SQLAlchemy stores SQLite timestamps as this text
        params = {
            k: v.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, datetime) else v
            for k, v in params.items()
        }
    engine = create_engine(url)
    with engine.begin() as conn:
        result = conn.execute(text(statement), params)
        rows = result.all() if result.returns_rows else None
    engine.dispose()
    return rows


@pytest.fixture
def cycle(tmp_path):
    now = datetime.now(UTC).replace(tzinfo=None)
    if now.minute >= 57:  # keep the refresh inside one hour: the test asserts on it
        time.sleep((60 - now.minute) * 60 - now.second + 5)
        now = datetime.now(UTC).replace(tzinfo=None)
    hour = now.replace(minute=0, second=0, microsecond=0)
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "METRICS_CATALOG_URL": f"sqlite:///{tmp_path}/catalog.db",
        "METRICS_SHARD_URL_TEMPLATE": f"sqlite:///{tmp_path}/{{shard}}.db",
        "METRICS_WAREHOUSE_URL": f"sqlite:///{tmp_path}/warehouse.db",
        "METRICS_REFRESH_MINUTES": "1",
        "METRICS_SENSOR_INTERVAL_S": "5",
        "METRICS_BUSY_RETRIES": "1",
        "METRICS_BUSY_RETRY_DELAY_S": "1",
        "METRICS_RETRY_BACKOFF_S": "0",
        # The backlog window: the two hours before the previous one (the schedule owns those).
        "METRICS_BACKLOG_LOOKBACK_HOURS": "2",
        "METRICS_BACKLOG_SETTLE_HOURS": "2",
    }
    create_demo_data(
        env["METRICS_CATALOG_URL"],
        env["METRICS_SHARD_URL_TEMPLATE"],
        end=hour + timedelta(hours=1),
        days=1,
        scale=0.3,
        billers=BILLERS,
    )
    shard = env["METRICS_SHARD_URL_TEMPLATE"].replace("{shard}", "shard_east")
    sql(shard, 'UPDATE "BillerDataPump" SET "Processing" = 1 WHERE "BillerId" = :b', b=BUSY)
    # An hour ten days old that an earlier run left busy and nothing has touched since: far
    # beyond every look-back, it must still be mended once the flag clears.
    old = hour - timedelta(days=10)
    for minute in (3, 17, 41):
        sql(
            shard,
            'INSERT INTO "DataPumpDetail" ("BillerId", "CreatedDate", "StatusCode", '
            '"ResponseTime") VALUES (:b, :c, :s, 80.5)',
            b=BUSY,
            c=old + timedelta(minutes=minute),
            s="500" if minute == 17 else "200",
        )
    WarehouseResource(url=env["METRICS_WAREHOUSE_URL"]).record_ledger(
        DATAPUMP,
        HOURLY,
        [LedgerEntry(str(BUSY), old, "busy", "shard busy: Processing flag still set")],
        now=old + timedelta(minutes=5),
    )
    (tmp_path / "workspace.yaml").write_text(
        "load_from:\n  - python_module:\n      module_name: metrics_pipeline.definitions\n"
        f"      working_directory: {Path(__file__).resolve().parents[2]}\n"
    )
    log = open(tmp_path / "daemon.log", "w")
    daemon = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster-daemon"),
            "run",
            "-w",
            str(tmp_path / "workspace.yaml"),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        yield {
            "env": env,
            "shard": shard,
            "hour": hour,
            "old": old,
            "home": home,
            "daemon": daemon,
            "log": tmp_path / "daemon.log",
        }
    finally:
        stop_tree(daemon, grace_s=30)  # its code server and run workers would outlive it
        log.close()


def day_equals_its_hours(wh: str, biller: int, day: datetime) -> bool:
    """The biller's daily row holds exactly the sum of its hourly rows of that day."""
    [(hours_sum,)] = sql(
        wh,
        'SELECT SUM("RequestCount") FROM "DataPumpErrorAggregation" WHERE "BillerId" = :b '
        'AND "TimeStampTypeId" = 1 AND "CoveredHours" > 0 AND "StartTime" >= :d '
        'AND "StartTime" < :e',
        b=biller,
        d=day,
        e=day + timedelta(days=1),
    )
    daily = sql(
        wh,
        'SELECT "RequestCount" FROM "DataPumpErrorAggregation" '
        'WHERE "BillerId" = :b AND "TimeStampTypeId" = 2 AND "StartTime" = :d',
        b=biller,
        d=day,
    )
    # No daily row while none of the day's hours is written.
    return hours_sum is not None and bool(daily) and daily[0][0] == hours_sum


#: How long each step may take. wait_for returns as soon as the state holds, so this costs
#: nothing when the machine is quick; it is the budget of a loaded 2-core machine, where every
#: run the daemon launches is a new process importing Dagster and the code location.
BUDGET_S = 900


def wait_for(what, check, timeout, cycle):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cycle["daemon"].poll() is not None:
            raise AssertionError(f"dagster-daemon exited:\n{cycle['log'].read_text()[-4000:]}")
        value = check()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}:\n{cycle['log'].read_text()[-4000:]}")


def test_busy_shard_cycle_heals_itself_under_the_daemon(cycle):
    env, hour = cycle["env"], cycle["hour"]
    instance = DagsterInstance.from_config(str(cycle["home"]))
    wh = env["METRICS_WAREHOUSE_URL"]

    def busy_run():
        # Busy is routine: the run succeeds, tagged with the billers it skipped.
        runs = instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
        return [
            r
            for r in runs
            if r.tags.get("metrics/busy_billers") == str(BUSY)
            and r.tags.get("dagster/schedule_name") == "refresh_schedule"
        ]

    [busy, *_] = wait_for(
        "a scheduled refresh run skipping the busy biller", busy_run, BUDGET_S, cycle
    )
    assert busy.tags["metrics/failure"] == "shard busy"
    ledger = WarehouseResource(url=wh)

    def state_of_busy_hour() -> str | None:
        rows = ledger.read_ledger(DATAPUMP, HOURLY, hour, hour + HOURLY.length)
        entry = rows.get(hour, {}).get(str(BUSY))
        return entry.state if entry else None

    assert state_of_busy_hour() == "busy"
    check = AssetCheckKey(AssetKey("error_rate_hourly"), "coverage")
    # The busy run's own evaluation (later runs of the schedule may be in flight meanwhile).
    history = instance.event_log_storage.get_asset_check_execution_history(check, limit=50)
    [evaluation, *_] = [
        r.event.dagster_event.event_specific_data
        for r in history
        if r.run_id == busy.run_id
        and r.event is not None
        and r.event.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert not evaluation.passed and evaluation.severity.value == "WARN"
    assert str(BUSY) in evaluation.metadata["missing_billers"].value
    written = sql(
        wh,
        'SELECT "BillerId" FROM "DataPumpErrorAggregation" '
        'WHERE "TimeStampTypeId" = 1 AND "StartTime" = :h',
        h=hour,
    )
    assert {r[0] for r in written} == {101}  # the other biller went on

    sql(
        cycle["shard"], 'UPDATE "BillerDataPump" SET "Processing" = 0 WHERE "BillerId" = :b', b=BUSY
    )

    def retried():
        runs = instance.get_runs(
            filters=RunsFilter(tags={"metrics/retry": "true", "metrics/billers": str(BUSY)})
        )
        return [r for r in runs if r.status == DagsterRunStatus.SUCCESS]

    wait_for("the retry of the busy biller", retried, BUDGET_S, cycle)

    refresh_id = retried()[0].tags["metrics/refresh"]

    def rolled_up():
        runs = instance.get_runs(
            filters=RunsFilter(tags={"metrics/refresh": refresh_id, "metrics/level": "weekly"})
        )
        return [r for r in runs if r.status == DagsterRunStatus.SUCCESS]

    wait_for("daily and weekly runs after the retry", rolled_up, BUDGET_S, cycle)

    # The ledger says the busy biller's hour is written now (the schedule keeps refreshing it).
    wait_for(
        "the busy hour to be written", lambda: state_of_busy_hour() == "written", BUDGET_S, cycle
    )

    # The ten-day-old busy hour too, with the shard's figures, and its day says it holds one
    # written hour of 24 (nothing else of that day was ever computed).
    old = cycle["old"]

    def old_hour_mended():
        rows = sql(
            wh,
            'SELECT "RequestCount", "FailedRequests", "CoveredHours" FROM '
            '"DataPumpErrorAggregation" WHERE "BillerId" = :b AND "TimeStampTypeId" = 1 '
            'AND "StartTime" = :h',
            b=BUSY,
            h=old,
        )
        return rows and tuple(rows[0]) == (3, 1, 1)

    wait_for("the ten-day-old busy hour to be mended", old_hour_mended, BUDGET_S, cycle)

    def old_day_partial():
        rows = sql(
            wh,
            'SELECT "RequestCount", "CoveredHours", "ExpectedHours" FROM '
            '"DataPumpErrorAggregation" WHERE "BillerId" = :b AND "TimeStampTypeId" = 2 '
            'AND "StartTime" = :d',
            b=BUSY,
            d=old.replace(hour=0),
        )
        return rows and tuple(rows[0]) == (3, 1, 24)

    wait_for(
        "the old hour's day to be rolled up as 1 of 24 hours", old_day_partial, BUDGET_S, cycle
    )
    day = hour.replace(hour=0)

    # The backlog's backfill may write older hours of the day meanwhile (its sensor runs all
    # along); the refresh's next daily run rolls them in: the day converges to its hours.
    wait_for(
        "the busy biller's day to equal its hours",
        lambda: day_equals_its_hours(wh, BUSY, day),
        BUDGET_S,
        cycle,
    )

    # Complete and correct: the busy biller's hour equals the raw rows' figures.
    raw = read_raw([cycle["shard"]])
    expected = reference(raw[raw["BillerId"] == BUSY], "hourly")[(BUSY, hour)]
    [(count, failed_count)] = sql(
        wh,
        'SELECT "RequestCount", "FailedRequests" FROM "DataPumpErrorAggregation" '
        'WHERE "BillerId" = :b AND "TimeStampTypeId" = 1 AND "StartTime" = :h',
        b=BUSY,
        h=hour,
    )
    # Rows of the running hour may still be arriving in a real system; the demo's are fixed.
    assert (count, failed_count) == (expected["RequestCount"], expected["FailedRequests"])

    # The backlog: one backfill for the older hours nobody materialized, none while in flight.
    def backfills():
        return instance.get_backfills()

    # The first backlog backfill (a later one may follow once it ended: hours of the busy biller
    # recorded busy while it ran are still incomplete).
    backfill = min(
        wait_for("the backlog backfill", backfills, BUDGET_S, cycle),
        key=lambda b: b.backfill_timestamp,
    )
    assert backfill.tags.get("metrics/backlog") == "true"

    def backfill_done():
        return instance.get_backfill(backfill.backfill_id).status.value != "REQUESTED"

    wait_for("the backfill to finish", backfill_done, BUDGET_S, cycle)
    # Backlog ticks ran every 5 s while it was in flight and launched nothing more.
    ended = instance.get_backfill(backfill.backfill_id).backfill_end_timestamp
    assert ended is not None
    during = [
        b
        for b in instance.get_backfills()
        if b.backfill_id != backfill.backfill_id and b.backfill_timestamp < ended
    ]
    assert during == []
    older = hour - timedelta(hours=3)

    def older_filled():
        rows = sql(
            wh,
            'SELECT COUNT(*) FROM "DataPumpErrorAggregation" '
            'WHERE "TimeStampTypeId" = 1 AND "StartTime" = :h',
            h=older,
        )
        return rows[0][0] == 2  # the busy biller's too, once retried

    wait_for("the older hours of both billers", older_filled, BUDGET_S, cycle)

    # The job log has a row per aggregation run.
    runs = instance.get_runs(
        filters=RunsFilter(statuses=[DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE])
    )
    logged = sql(wh, 'SELECT "RunId", "BillersSkippedBusy" FROM "DataPumpMetricAggregationJobLog"')
    assert {r.run_id for r in runs} <= {r[0] for r in logged}
    assert dict(logged)[busy.run_id] == 1

    # A late row for an hour that closed hours ago (already written, by the backlog above): the
    # next scheduled refresh finds it beyond the shard's cursor and recomputes that hour and day.
    late_hour = older
    [(before,)] = sql(
        wh,
        'SELECT "RequestCount" FROM "DataPumpErrorAggregation" '
        'WHERE "BillerId" = 101 AND "TimeStampTypeId" = 1 AND "StartTime" = :h',
        h=late_hour,
    )
    sql(
        cycle["shard"],
        'INSERT INTO "DataPumpDetail" ("BillerId", "CreatedDate", "StatusCode", "ResponseTime") '
        "VALUES (101, :c, '500', 12.5)",
        c=late_hour + timedelta(minutes=7),
    )

    def late_row_counted():
        [(count,)] = sql(
            wh,
            'SELECT "RequestCount" FROM "DataPumpErrorAggregation" '
            'WHERE "BillerId" = 101 AND "TimeStampTypeId" = 1 AND "StartTime" = :h',
            h=late_hour,
        )
        return count == before + 1

    wait_for("the late row to be counted by a scheduled refresh", late_row_counted, BUDGET_S, cycle)
    day = late_hour.replace(hour=0)

    wait_for(
        "the late row's day to be rolled up",
        lambda: day_equals_its_hours(wh, 101, day),
        BUDGET_S,
        cycle,
    )
