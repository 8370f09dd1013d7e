"""Retention (seed 004 keeps raw data only for a while): a daily job deleting, in bounded
batches of short transactions, raw collected points, availability minutes, ledger rows of
closed hours and the Dagster run history of refresh runs older than their horizons. Hourly,
daily and weekly aggregates are never deleted. What each table lost is the run's metadata."""

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from dagster import (
    ConfigurableResource,
    DagsterRunStatus,
    DefaultScheduleStatus,
    Definitions,
    MetadataValue,
    OpExecutionContext,
    Output,
    RunsFilter,
    ScheduleDefinition,
    in_process_executor,
    job,
    op,
)
from sqlalchemy import Engine, inspect

from metrics_pipeline.resources.engines import ConfigurationError
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import hour_start
from metrics_pipeline.settings import from_env
from metrics_pipeline.sql.retention import delete_batch
from metrics_pipeline.tags import REFRESH_TAG

JOB_NAME = "retention_job"
#: Environment variable of each setting.
VARIABLES = {
    "collected_raw_days": "METRICS_RETENTION_COLLECTED_RAW_DAYS",
    "availability_minute_days": "METRICS_RETENTION_AVAILABILITY_MINUTE_DAYS",
    "ledger_days": "METRICS_RETENTION_LEDGER_DAYS",
    "run_history_days": "METRICS_RETENTION_RUN_HISTORY_DAYS",
    "batch_rows": "METRICS_RETENTION_BATCH_ROWS",
}
#: Run statuses whose records may go (never a queued or running one).
FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]


@dataclass(frozen=True)
class RetentionSettings:
    collected_raw_days: int = 30
    availability_minute_days: int = 90
    ledger_days: int = 400
    run_history_days: int = 30
    #: Rows (or runs) per delete statement, each its own transaction.
    batch_rows: int = 5000

    def __post_init__(self):
        for name in VARIABLES:
            if getattr(self, name) < (1 if name == "batch_rows" else 0):
                raise ConfigurationError(f"{VARIABLES[name]}: got {getattr(self, name)}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "RetentionSettings":
        try:
            return from_env(cls, VARIABLES, environ)
        except ValueError as exc:
            raise ConfigurationError(f"retention settings: {exc}") from None


def horizons(settings: RetentionSettings, now: datetime, max_past_s: float) -> dict[str, datetime]:
    """The cutoff of each table (whole UTC hours). The raw points' is never younger than the
    collector's window for late points (METRICS_COLLECTOR_MAX_PAST_S): an hour whose points are
    gone can receive no new point, so its statistics are never recomputed from a partial hour."""
    raw_age = max(timedelta(days=settings.collected_raw_days), timedelta(seconds=max_past_s))
    return {
        "CollectedMetric": hour_start(now - raw_age),
        "AvailabilityMinute": hour_start(now - timedelta(days=settings.availability_minute_days)),
        "CoverageLedger": hour_start(now - timedelta(days=settings.ledger_days)),
    }


def delete_older(engine: Engine, table, identity, time, cutoff: datetime, rows: int) -> int:
    """Delete ``table``'s rows before ``cutoff`` in batches of ``rows``; how many went."""
    deleted = 0
    while True:
        with engine.begin() as conn:
            n = conn.execute(delete_batch(table, identity, time, cutoff, rows)).rowcount
        deleted += n
        if n < rows:
            return deleted


def delete_runs(instance, cutoff: datetime, batch: int, is_refresh: Callable) -> int:
    """Delete the finished refresh runs created before ``cutoff`` through the instance's API,
    one page of ``batch`` run records at a time; how many went."""
    deleted, cursor = 0, None
    filters = RunsFilter(created_before=cutoff, statuses=FINISHED)
    while True:
        records = instance.get_run_records(
            filters=filters, limit=batch, cursor=cursor, ascending=True
        )
        if not records:
            return deleted
        for record in records:
            if is_refresh(record.dagster_run.tags):
                instance.delete_run(record.dagster_run.run_id)
                deleted += 1
            else:
                cursor = record.dagster_run.run_id  # kept: page on after it
        if len(records) < batch:
            return deleted


def apply_retention(
    engine: Engine, schema: str | None, settings: RetentionSettings, now: datetime, max_past_s
) -> dict[str, int]:
    """Rows deleted per warehouse table (a table not created yet is left out)."""
    from metrics_pipeline.availability.sql import build_tables as availability_tables
    from metrics_pipeline.collected.sql import build_tables as collected_tables
    from metrics_pipeline.sql.warehouse import build_warehouse

    cutoffs = horizons(settings, now, max_past_s)
    raw = collected_tables(schema).raw
    minute = availability_tables(schema).minute
    ledger = build_warehouse(schema).ledger
    plans = [
        (raw, raw.c.Id, raw.c.CollectedAt),
        (minute, minute.c.Id, minute.c.StartTime),
        (ledger, ledger.c.CoverageLedgerId, ledger.c.StartTime),
    ]
    present = set(inspect(engine).get_table_names(schema=schema))
    return {
        table.name: delete_older(
            engine, table, identity, time, cutoffs[table.name], settings.batch_rows
        )
        for table, identity, time in plans
        if table.name in present
    }


class RetentionResource(ConfigurableResource):
    """The horizons (METRICS_RETENTION_*), and the collector's late-point window."""

    collected_raw_days: int = 30
    availability_minute_days: int = 90
    ledger_days: int = 400
    run_history_days: int = 30
    batch_rows: int = 5000
    max_past_s: float = 7 * 86400.0

    def settings(self) -> RetentionSettings:
        return RetentionSettings(**{name: getattr(self, name) for name in VARIABLES})


def retention_resource(environ: Mapping[str, str] | None = None) -> RetentionResource:
    """The resource of the settings in ``environ`` (the process's environment by default)."""
    from metrics_pipeline.collected.settings import CollectedSettings

    settings = RetentionSettings.from_env(environ)
    return RetentionResource(
        **{name: getattr(settings, name) for name in VARIABLES},
        max_past_s=CollectedSettings.from_environ(environ).max_past_s,
    )


@op(description="Deletes what is older than each table's horizon, in bounded batches.")
def apply_retention_op(
    context: OpExecutionContext, warehouse: WarehouseResource, retention: RetentionResource
):
    from metrics_pipeline.clock import utc_now

    settings = retention.settings()
    now = utc_now()
    max_past = retention.max_past_s
    deleted = apply_retention(warehouse.engine(), warehouse.db_schema, settings, now, max_past)
    runs_cutoff = now - timedelta(days=settings.run_history_days)
    deleted["Dagster runs (refresh)"] = delete_runs(
        context.instance, runs_cutoff, settings.batch_rows, lambda tags: REFRESH_TAG in tags
    )
    context.log.info("retention: " + ", ".join(f"{k} {v}" for k, v in deleted.items()))
    cutoffs = {**horizons(settings, now, max_past), "Dagster runs (refresh)": runs_cutoff}
    metadata = {f"deleted {name}": MetadataValue.int(n) for name, n in deleted.items()}
    metadata.update(
        {f"cutoff {k}": MetadataValue.text(f"{v:%Y-%m-%d %H:%M} UTC") for k, v in cutoffs.items()}
    )
    return Output(deleted, metadata=metadata)


def build_retention_definitions(environ: Mapping[str, str] | None = None) -> Definitions:
    """The retention job, its daily schedule (METRICS_RETENTION_CRON) and its resource."""
    env = os.environ if environ is None else environ
    cron = env.get("METRICS_RETENTION_CRON") or "45 3 * * *"

    @job(
        name=JOB_NAME,
        executor_def=in_process_executor,
        description="Daily retention: raw collected points, availability minutes, ledger rows of "
        "closed hours and refresh run history older than their METRICS_RETENTION_* horizons.",
    )
    def retention_job():
        apply_retention_op()

    schedule = ScheduleDefinition(
        name="retention_schedule",
        cron_schedule=cron,
        execution_timezone="UTC",
        job=retention_job,
        default_status=DefaultScheduleStatus.RUNNING,
        description="Daily (METRICS_RETENTION_CRON): the retention job.",
    )
    return Definitions(
        jobs=[retention_job],
        schedules=[schedule],
        resources={"retention": retention_resource(env)},
    )


def run_retention(environ: Mapping[str, str] | None = None, instance=None) -> dict[str, int]:
    """The ``retention`` command: one run of the job in this process (through DAGSTER_HOME's
    instance, whose refresh runs it prunes); what it deleted per table. RuntimeError naming
    the failed step's error when the run fails."""

    from metrics_pipeline.execution import execute, open_instance, step_error
    from metrics_pipeline.resources import warehouse_resource

    env = os.environ if environ is None else environ
    warehouse = warehouse_resource(env, resolve=True)
    defs = Definitions.merge(
        build_retention_definitions(env), Definitions(resources={"warehouse": warehouse})
    )
    result = execute(
        defs.resolve_job_def(JOB_NAME), instance or open_instance(env), {"metrics/source": "cli"}
    )
    if not result.success:
        raise RuntimeError(step_error(result)[0])
    return result.output_for_node("apply_retention_op")
