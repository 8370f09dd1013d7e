"""Replaces the pending-aggregation queue: a Dagster backfill for what is missing or failed."""

from datetime import UTC, datetime

from dagster import (
    AssetSelection,
    DefaultSensorStatus,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from metrics_pipeline.assets.checks import backlog_evaluation
from metrics_pipeline.backlog import BacklogSettings, backfill_partitions, find_backlog
from metrics_pipeline.dagster_internal import backfill_request, backfills_in_flight
from metrics_pipeline.partitions import billers_partitions
from metrics_pipeline.resources.warehouse import WarehouseResource

BACKLOG_TAG = {"metrics/backlog": "true"}


def _backlog_sensor(context: SensorEvaluationContext, warehouse: WarehouseResource):
    in_flight = backfills_in_flight(context.instance, BACKLOG_TAG)
    if in_flight:
        return SkipReason(f"backfill {in_flight[0]} is still in flight")
    settings = BacklogSettings.from_env()
    billers = context.instance.get_dynamic_partitions(billers_partitions.name)
    if not billers:
        return SkipReason("no billers yet")
    now = datetime.now(UTC).replace(tzinfo=None)
    backlog = find_backlog(context.instance, warehouse, billers, now, settings)
    evaluation = backlog_evaluation(backlog, settings)
    if not evaluation.passed:
        context.log.error(
            f"backlog above threshold {settings.alert_threshold}: {backlog.describe()}"
        )
    if not backlog.gaps:
        return SensorResult(
            asset_events=[evaluation], skip_reason="no missing or failed partitions"
        )
    context.log.info(f"launching a backfill: {backlog.describe()}")
    request = backfill_request(
        context.repository_def.asset_graph, backfill_partitions(backlog.gaps), tags=BACKLOG_TAG
    )
    return SensorResult(run_requests=[request], asset_events=[evaluation])


def build_backlog_sensor(minimum_interval_seconds: int = 300) -> SensorDefinition:
    return sensor(
        name="backlog_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        asset_selection=AssetSelection.groups("metrics_hourly", "metrics_daily", "metrics_weekly"),
        description="Finds hourly partitions missing from the warehouse or failed within the "
        "look-back window and launches one backfill for them (and their days and weeks); at most "
        "one per tick, none while its previous backfill is in flight. Reports the hourly_backlog "
        "check, "
        "which fails with severity ERROR above the alert threshold.",
    )(_backlog_sensor)


backlog_sensor = build_backlog_sensor()
