"""The refresh schedule: every N minutes, the running hour (and the one just closed)."""

from datetime import date

from dagster import DefaultScheduleStatus, ScheduleDefinition, ScheduleEvaluationContext

from metrics_pipeline.datapump.refresh import refresh_hours, refresh_request
from metrics_pipeline.semantics import HOURLY
from metrics_pipeline.tags import CHANGES_TAG

VALID_INTERVALS = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)


def refresh_cron(every_minutes: int) -> str:
    if every_minutes not in VALID_INTERVALS:
        raise ValueError(
            f"METRICS_REFRESH_MINUTES must divide an hour (one of {VALID_INTERVALS}), "
            f"got {every_minutes}"
        )
    return "0 * * * *" if every_minutes == 60 else f"*/{every_minutes} * * * *"


def build_refresh_schedule(start: date, every_minutes: int = 30) -> ScheduleDefinition:
    def evaluate(context: ScheduleEvaluationContext):
        tick = context.scheduled_execution_time.replace(tzinfo=None)
        hours = refresh_hours(tick, every_minutes)
        # Daily and weekly follow when this run ends (refresh_chain_sensor): they read its rows.
        return refresh_request(
            HOURLY, start, hours, tick.strftime("%Y%m%dT%H%M"), {CHANGES_TAG: "true"}
        )

    return ScheduleDefinition(
        name="refresh_schedule",
        cron_schedule=refresh_cron(every_minutes),
        execution_timezone="UTC",
        job_name=HOURLY.job_name,
        execution_fn=evaluate,
        default_status=DefaultScheduleStatus.RUNNING,
        description=(
            f"Every {every_minutes} minutes (the DataPump family's import task): the running hour "
            "of every enabled biller, the previous hour while it closed less than one interval "
            "ago, and every older cell that received rows beyond its shard's cursor (or that "
            "reconciliation marked stale); then daily and weekly follow for what it touched."
        ),
    )


def build_reconciliation_schedule(cron: str = "15 2 * * *") -> ScheduleDefinition:
    return ScheduleDefinition(
        name="reconciliation_schedule",
        cron_schedule=cron,
        execution_timezone="UTC",
        job_name="reconciliation_job",
        default_status=DefaultScheduleStatus.RUNNING,
        description="Daily: compares the last METRICS_RECONCILE_DAYS days of hourly figures "
        "between the shards and the warehouse and marks what differs for the next refresh.",
    )
