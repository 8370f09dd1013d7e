"""Dagster objects of the family: the ``collected_metric_hourly`` asset (group ``collected``,
hourly time-only partitions: metric keys are rows inside a partition), its job, and the
change-driven refresh sensor. Built by functions, never at import."""

import os
import warnings
from collections.abc import Mapping
from datetime import date, datetime, timedelta

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    AssetSpec,
    BackfillPolicy,
    BetaWarning,
    DefaultSensorStatus,
    Definitions,
    HourlyPartitionsDefinition,
    MaterializeResult,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    asset,
    define_asset_job,
    in_process_executor,
    sensor,
)

from metrics_pipeline.assets.columns import table_schema
from metrics_pipeline.collected.settings import CollectedSettings
from metrics_pipeline.collected.sql import build_tables
from metrics_pipeline.collected.store import CollectedStore, RefreshPlan
from metrics_pipeline.partitions import partition_range_tags, partitions_def, partitions_start
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import HOURLY
from metrics_pipeline.settings import sensor_interval
from metrics_pipeline.tags import REFRESH_TAG

GROUP = "collected"
JOB_NAME = "collected_hourly_job"
#: Run tags carrying the cursor a refresh run moves once its hours are written.
CURSOR_CURRENT_TAG = "collected/cursor_current"
CURSOR_SEEN_TAG = "collected/cursor_seen"


def collected_partitions(environ: Mapping[str, str] | None = None) -> HourlyPartitionsDefinition:
    """The platform's hourly partitions (metrics_pipeline.partitions)."""
    return partitions_def(HOURLY, partitions_start(environ))


def hours_of(start: datetime, end: datetime) -> list[datetime]:
    """The hour starts of [start, end)."""
    n = int((end - start) / timedelta(hours=1))
    return [start + timedelta(hours=i) for i in range(n)]


def plan_tags(plan: RefreshPlan, start: date) -> dict[str, str]:
    """The run tags of a refresh: its partition range and the cursor it moves."""
    return {
        **partition_range_tags(HOURLY, start, plan.hours[0], plan.hours[-1]),
        CURSOR_CURRENT_TAG: "" if plan.current is None else str(plan.current),
        CURSOR_SEEN_TAG: str(plan.seen),
    }


def plan_from_tags(tags: Mapping[str, str]) -> RefreshPlan | None:
    if CURSOR_SEEN_TAG not in tags:
        return None
    current = tags.get(CURSOR_CURRENT_TAG) or None
    return RefreshPlan(None if current is None else int(current), 0, int(tags[CURSOR_SEEN_TAG]), ())


def build_collected_asset(partitions_def: HourlyPartitionsDefinition):
    # backfill_policy on @asset is marked beta in Dagster 1.13 (the multi-assets of the other
    # families use it too); silence the warning here rather than in every command's output.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        return _collected_asset(partitions_def)


RAW = AssetKey(["collected", "CollectedMetric"])

#: What each column is and where it comes from (open-source Dagster shows these descriptions).
_RAW_COLUMNS = {
    "Id": "Row identity; the hourly statistics' change cursor",
    "MessageId": "The bus message that carried the point (deduplication key with MetricKey)",
    "MetricKey": "The metric's key as the client app sent it",
    "App": "The client app that sent it",
    "Value": "The measurement",
    "CollectedAt": "When the app measured it (UTC)",
    "ReceivedAt": "When the collector received it (UTC)",
}
_HOURLY_COLUMNS = {
    "MetricKey": "The metric's key ← CollectedMetric.MetricKey",
    "StartTime": "Start of the UTC hour ← CollectedMetric.CollectedAt",
    "SampleCount": "Points of the key in the hour ← CollectedMetric.Id",
    "Average": "Mean of the hour's values ← CollectedMetric.Value",
    "Minimum": "Smallest value of the hour ← CollectedMetric.Value",
    "Maximum": "Largest value of the hour ← CollectedMetric.Value",
    "Median": "Exact median of the hour's values ← CollectedMetric.Value",
    "P95": "95th percentile (nearest rank) of the hour's values ← CollectedMetric.Value",
    "P99": "99th percentile (nearest rank) of the hour's values ← CollectedMetric.Value",
}


def raw_spec() -> AssetSpec:
    """The raw table the bus consumer fills: the hourly statistics' upstream in the lineage."""
    return AssetSpec(
        key=RAW,
        group_name=GROUP,
        kinds={"sql", "nats"},
        description="CollectedMetric: every point client apps sent to the collector, stored by "
        "the bus consumer from the NATS JetStream stream (seed 002). Not materialized by Dagster.",
        metadata={
            "dagster/column_schema": table_schema(build_tables().raw, _RAW_COLUMNS),
            "dagster/table_name": "CollectedMetric",
        },
    )


def _collected_asset(partitions_def: HourlyPartitionsDefinition):
    @asset(
        name="collected_metric_hourly",
        group_name=GROUP,
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        kinds={"sql"},
        deps=[RAW],
        metadata={
            "dagster/column_schema": table_schema(build_tables().hourly, _HOURLY_COLUMNS),
            "dagster/table_name": "CollectedMetricHourly",
        },
        description="CollectedMetricHourly: per metric key and UTC hour, SampleCount, Average, "
        "Minimum, Maximum, exact Median, P95 and P99 (nearest rank) of the raw CollectedMetric "
        "rows of every app (seed 002); CollectedMetricAppHourly: the same per app and key.",
    )
    def collected_metric_hourly(
        context: AssetExecutionContext, warehouse: WarehouseResource
    ) -> MaterializeResult:
        window = context.partition_time_window
        start = window.start.replace(tzinfo=None)
        end = window.end.replace(tzinfo=None)
        store = CollectedStore(warehouse.engine(), warehouse.db_schema)
        store.ensure_schema()
        hours = list(hours_of(start, end))
        rows = store.write_hours(hours)
        plan = plan_from_tags(context.run.tags)
        if plan is not None:
            store.advance(plan)
        # Each hour partition carries its own rows; the run's totals stay on the run (its log).
        for hour, counts in store.rows_per_hour(hours).items():
            context.add_asset_metadata(
                {"rows_written": counts.all_apps, "app_rows_written": counts.per_app},
                partition_key=f"{hour:%Y-%m-%d-%H:%M}",
            )
        context.log.info(
            f"run totals: {len(hours)} hour(s), {rows.all_apps} statistics rows, "
            f"{rows.per_app} per-app rows; cursor "
            f"{plan.seen if plan else 'unchanged (not a refresh run)'}"
        )
        return MaterializeResult()

    return collected_metric_hourly


def build_collected_job(asset_def):
    return define_asset_job(
        JOB_NAME,
        selection=AssetSelection.assets(asset_def),
        executor_def=in_process_executor,
        description="Hourly statistics of collected metrics for a range of hours.",
    )


def build_collected_sensor(start: date, minimum_interval_seconds: int = 300) -> SensorDefinition:
    """Every interval: the hours with raw rows stored since the cursor's previous position, as
    one run over their range (late points for a closed hour re-aggregate that hour)."""

    def collected_refresh_sensor(context: SensorEvaluationContext, warehouse: WarehouseResource):
        store = CollectedStore(warehouse.engine(), warehouse.db_schema)
        store.ensure_schema()
        plan = store.plan_refresh()
        if not plan.hours:
            return SkipReason(f"no new collected rows (cursor at Id {plan.seen})")
        return RunRequest(
            run_key=f"collected-{plan.previous}-{plan.seen}",
            job_name=JOB_NAME,
            tags={**plan_tags(plan, start), REFRESH_TAG: "collected"},
        )

    return sensor(
        name="collected_refresh_sensor",
        job_name=JOB_NAME,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Re-aggregates the hours that received collected points since its last "
        "refresh (cursor on CollectedMetric.Id, kept in the warehouse).",
    )(collected_refresh_sensor)


def build_collected_definitions(environ: Mapping[str, str] | None = None) -> Definitions:
    """The family's Dagster objects (its resource, the warehouse, is the platform's)."""
    env = os.environ if environ is None else environ
    asset_def = build_collected_asset(collected_partitions(env))
    interval = sensor_interval(env).get(
        "minimum_interval_seconds", CollectedSettings.from_environ(env).refresh_s
    )
    return Definitions(
        assets=[raw_spec(), asset_def],
        jobs=[build_collected_job(asset_def)],
        sensors=[build_collected_sensor(partitions_start(env), interval)],
    )
