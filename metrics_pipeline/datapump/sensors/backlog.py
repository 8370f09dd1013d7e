"""Replaces the pending-aggregation queue: a Dagster backfill of the hours not fully covered."""

from datetime import date

from dagster import (
    AssetSelection,
    DefaultSensorStatus,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from metrics_pipeline.clock import utc_now
from metrics_pipeline.dagster_internal import backfill_request, backfills_in_flight
from metrics_pipeline.datapump.assets.checks import backlog_evaluation
from metrics_pipeline.datapump.backlog import BacklogSettings, backfill_partitions, find_backlog
from metrics_pipeline.datapump.shards import CatalogResource
from metrics_pipeline.partitions import first_window
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import HOURLY, LEVELS
from metrics_pipeline.tags import SCOPE_INCOMPLETE, SCOPE_TAG

BACKLOG_TAG = {"metrics/backlog": "true"}


def build_backlog_sensor(start: date, minimum_interval_seconds: int = 300) -> SensorDefinition:
    def _backlog_sensor(
        context: SensorEvaluationContext, catalog: CatalogResource, warehouse: WarehouseResource
    ):
        in_flight = backfills_in_flight(context.instance, BACKLOG_TAG)
        if in_flight:
            return SkipReason(f"backfill {in_flight[0]} is still in flight")
        settings = BacklogSettings.from_env()
        billers = [b.biller_id for b in catalog.enabled_billers()]
        if not billers:
            return SkipReason("the catalog has no DataPump-enabled billers")
        now = utc_now()
        backlog = find_backlog(warehouse, billers, now, settings, first_window(HOURLY, start))
        evaluation = backlog_evaluation(backlog, settings)
        if not evaluation.passed:
            context.log.error(
                f"backlog above threshold {settings.alert_threshold}: {backlog.describe()}"
            )
        if not backlog.gaps:
            return SensorResult(asset_events=[evaluation], skip_reason="every hour is covered")
        context.log.info(f"launching a backfill: {backlog.describe()}")
        request = backfill_request(
            context.repository_def.asset_graph,
            backfill_partitions(sorted(backlog.gaps), start),
            # Each run of the backfill computes only the billers not written in its hours.
            tags={**BACKLOG_TAG, SCOPE_TAG: SCOPE_INCOMPLETE},
        )
        return SensorResult(run_requests=[request], asset_events=[evaluation])

    return sensor(
        name="backlog_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        asset_selection=AssetSelection.groups(*(lv.group_name for lv in LEVELS)),
        description="Finds the hours of the look-back window that the coverage ledger says are "
        "not fully covered and launches one backfill for them (and their days and weeks), whose "
        "runs compute only the billers not written; at most one per tick, none while its "
        "previous backfill is in flight. Reports the hourly_backlog check, which fails with "
        "severity ERROR above the alert threshold.",
    )(_backlog_sensor)
