"""The per-hour ``objectives`` check on real SQLite and PostgreSQL warehouses: hourly rows and
BillerObjective rows in, one evaluation per hour out (range runs too), read by the alert rules
as one alert per burning biller."""

from datetime import datetime, timedelta

import pytest
from dagster import AssetCheckKey, AssetSelection, DagsterInstance, Definitions, define_asset_job
from sqlalchemy import and_, delete, insert

from metrics_pipeline.alerts.rules import Evaluation, apply, check_alerts
from metrics_pipeline.datapump.assets.reporting import COVERAGE_ASSET
from metrics_pipeline.datapump.objectives import OBJECTIVES_CHECK, validate, write_objectives
from metrics_pipeline.datapump.refresh import range_tags
from metrics_pipeline.definitions import build_definitions
from metrics_pipeline.partitions import parse_partitions_start, partition_key
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import HOURLY
from metrics_pipeline.sql.warehouse import ERROR_RATE, RESPONSE_TIME, TIMEOUT_RATE
from tests.support import register_billers

#: Billers of register_billers(..., 4): 1000 burns, 1001 is quiet, 1002 has no objective,
#: 1003 has an objective in percent by mistake (written past the validation, by hand).
BURNING, QUIET, NO_OBJECTIVE, INVALID = 1000, 1001, 1002, 1003
HOUR = datetime(2025, 3, 1, 11)
CHECK = AssetCheckKey(COVERAGE_ASSET, OBJECTIVES_CHECK)


def write_hours(warehouse_url: str, rows) -> None:
    """Hourly rows (biller, hour, requests, failed, timeouts, p95 ms, covered hours) in the
    three tables, replacing those billers' rows of those hours."""
    wh = WarehouseResource(url=warehouse_url)
    wh.ensure_schema()
    now = datetime(2025, 3, 5)
    values = {
        ERROR_RATE: lambda r: {"FailedRequests": r[3]},
        TIMEOUT_RATE: lambda r: {"TimeOutCount": r[4]},
        RESPONSE_TIME: lambda r: {"ResponseTimeCount": r[2], "P95ResponseTime": r[5]},
    }
    with wh.engine().begin() as conn:
        for agg, extra in values.items():
            table = wh.tables.table(agg)
            for r in rows:
                conn.execute(
                    delete(table).where(and_(table.c.BillerId == r[0], table.c.StartTime == r[1]))
                )
            conn.execute(
                insert(table),
                [
                    {
                        "BillerId": r[0],
                        "TimeStampTypeId": HOURLY.id,
                        "StartTime": r[1],
                        "EndTime": r[1] + HOURLY.length,
                        "RequestCount": r[2],
                        "CoveredHours": r[6],
                        "ExpectedHours": 1,
                        "CreatedDate": now,
                        "UpdatedDate": now,
                        **extra(r),
                    }
                    for r in rows
                ],
            )
    wh.engine().dispose()


def burning_warehouse(env: dict) -> None:
    """Six hours to ``HOUR`` inclusive: biller 1000 at 0.5 % errors, then 20 % in ``HOUR``
    (a page at 1 %); an hour not read (CoveredHours 0) that would burn if it counted; 1001
    failing every call of 10 an hour (not enough traffic)."""
    url = env["METRICS_WAREHOUSE_URL"]
    rows = []
    for h in range(6):
        hour = HOUR - timedelta(hours=5 - h)
        failed = 200 if hour == HOUR else 5
        rows.append((BURNING, hour, 1000, failed, 1, 300.0, 1))
        rows.append((QUIET, hour, 10, 10, 0, 100.0, 1))
        rows.append((NO_OBJECTIVE, hour, 1000, 900, 900, 9000.0, 1))
    rows.append((BURNING, HOUR - timedelta(hours=7), 1000, 1000, 1000, 9000.0, 0))
    write_hours(url, rows)
    wh = WarehouseResource(url=url)
    write_objectives(
        wh, [validate(BURNING, 0.01, 0.01, 800), validate(QUIET, 0.01), validate(INVALID, 0.5)]
    )
    with wh.engine().begin() as conn:  # a percentage written by hand, past the validation
        table = wh.tables.objectives
        conn.execute(table.update().where(table.c.BillerId == INVALID).values(ErrorRateObjective=2))
    wh.engine().dispose()


def run_check(env: dict, instance, first: datetime, last: datetime | None = None):
    """The objectives check alone for the hours first..last, as a backfill runs it."""
    defs = build_definitions(env, resolve=True)
    only = define_asset_job("objectives_only", selection=AssetSelection.checks(CHECK))
    job = Definitions.merge(defs, Definitions(jobs=[only])).resolve_job_def("objectives_only")
    tags = range_tags(HOURLY, parse_partitions_start(None), first, last or first)
    result = job.execute_in_process(instance=instance, tags=tags)
    assert result.success
    return objective_evaluations(result)


def objective_evaluations(result) -> list:
    """The run's evaluations of the objectives check (its hours', and a range's summary)."""
    return [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.event_specific_data.check_name == OBJECTIVES_CHECK
    ]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def env(request, tmp_path):
    env = register_billers(tmp_path, 4)
    if request.param == "postgres":
        env["METRICS_WAREHOUSE_URL"] = request.getfixturevalue("pg_databases").create()
    burning_warehouse(env)
    return env


def plain(evaluation) -> Evaluation:
    return Evaluation(
        CHECK.asset_key.to_user_string(),
        evaluation.check_name,
        evaluation.partition,
        evaluation.passed,
        evaluation.severity.value,
        evaluation.description,
        {k: v.value for k, v in evaluation.metadata.items()},
    )


def test_a_burning_biller_fails_its_hour_and_becomes_one_alert(env):
    with DagsterInstance.ephemeral() as instance:
        [evaluation] = run_check(env, instance, HOUR)
    assert not evaluation.passed and evaluation.severity.value == "ERROR"
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    assert set(meta["burning_billers"]) == {str(BURNING)}
    why = meta["burning_billers"][str(BURNING)]
    assert why.startswith("1000 (Biller 1000): error rate burns the 30-day budget 20.0x over 1h")
    assert meta["biller_severity"] == {str(BURNING): "ERROR"}
    # 1001 failed every call, but never had the traffic to page.
    assert meta["not_enough_traffic"] == [str(QUIET)]
    assert meta["without_objective"] == [str(NO_OBJECTIVE)]
    assert "strictly between 0 and 1" in meta["invalid_objectives"][str(INVALID)]
    # The budget counts the six read hours only (the unread hour's 1000 failures are unknown).
    budget = meta["billers"][str(BURNING)]["errorRate"]["budgetRemaining"]
    assert budget == pytest.approx(1 - 225 / (0.01 * 6000))
    assert meta["billers"][str(BURNING)]["p95"]["state"] == "ok"

    failing, _ = apply({}, {}, plain(evaluation))
    [alert] = check_alerts(failing, {"error_rate_hourly": "datapump"}).values()
    assert alert["labels"] == {
        "alertname": "MetricsObjectives",
        "severity": "critical",
        "family": "datapump",
        "asset_key": "error_rate_hourly",
        "check_name": "objectives",
        "biller": str(BURNING),
    }
    summary = alert["annotations"]["summary"]
    assert "biller 1000" in summary and "error rate burns" in summary


def test_a_range_run_judges_every_hour_at_its_own_end(env):
    with DagsterInstance.ephemeral() as instance:
        evaluations = run_check(env, instance, HOUR - timedelta(hours=1), HOUR + timedelta(hours=1))
    start = parse_partitions_start(None)
    by_hour = {e.partition: e for e in evaluations if e.partition}
    assert sorted(by_hour) == [
        partition_key(HOURLY, start, HOUR + timedelta(hours=i)) for i in (-1, 0, 1)
    ]
    # Before the burst: within the objective; its hour pages; the hour after it has no row
    # for the last hour, so the page is unknown, and 5 read hours at 4.4 % (4.4x) are no ticket.
    assert by_hour[partition_key(HOURLY, start, HOUR - timedelta(hours=1))].passed
    assert not by_hour[partition_key(HOURLY, start, HOUR)].passed
    after = by_hour[partition_key(HOURLY, start, HOUR + timedelta(hours=1))]
    assert after.passed
    state = after.metadata["billers"].value[str(BURNING)]
    assert state["errorRate"]["burn"]["page"]["long"] is None
    assert state["p95"]["state"] == "unknown"
    [summary] = [e for e in evaluations if e.partition is None]
    assert summary.description.startswith("2 of 3 partitions passed")


def test_a_biller_over_its_p95_objective_is_a_ticket(env):
    write_hours(env["METRICS_WAREHOUSE_URL"], [(BURNING, HOUR, 1000, 5, 1, 950.0, 1)])
    with DagsterInstance.ephemeral() as instance:
        [evaluation] = run_check(env, instance, HOUR)
    assert not evaluation.passed and evaluation.severity.value == "WARN"
    why = evaluation.metadata["burning_billers"].value[str(BURNING)]
    assert "p95 950 ms over the 800 ms objective" in why


def test_every_hourly_run_judges_the_objectives_of_its_hours(tmp_path):
    from tests.support import WINDOW_START, sqlite_environment

    env = sqlite_environment(tmp_path, per_hour=2)
    write_objectives(WarehouseResource(url=env["METRICS_WAREHOUSE_URL"]), [validate(7, 0.01)])
    first = WINDOW_START + timedelta(hours=3)
    tags = range_tags(HOURLY, parse_partitions_start(None), first, first + timedelta(hours=1))
    job = build_definitions(env, resolve=True).resolve_job_def("hourly_job")
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance, tags=tags)
    assert result.success
    judged = [e for e in objective_evaluations(result) if e.partition]
    start = parse_partitions_start(None)
    assert sorted(e.partition for e in judged) == [
        partition_key(HOURLY, start, first + timedelta(hours=i)) for i in (0, 1)
    ]
    # Two calls an hour: biller 7 is judged, and too quiet to page.
    assert all(e.passed for e in judged)
    assert all(e.metadata["not_enough_traffic"].value == ["7"] for e in judged)
    # Each evaluation belongs to its hour's materialization (the UI's per-partition status).
    assert all(e.target_materialization_data is not None for e in judged)
