"""Daily and weekly aggregates: exact sums of the level below, never a second shard read."""

from datetime import datetime

from dagster import AssetExecutionContext, BackfillPolicy, multi_asset
from sqlalchemy.dialects import mssql

from metrics_pipeline.aggregation import roll_up
from metrics_pipeline.assets.common import aggregate_spec, asset_key, group_by_biller, rollup_dep
from metrics_pipeline.assets.reporting import finish, plain_failures
from metrics_pipeline.partitions import (
    daily_from_hourly,
    daily_partitions,
    parse_partition_key,
    weekly_from_daily,
    weekly_partitions,
)
from metrics_pipeline.resources.warehouse import WarehouseResource, utcnow
from metrics_pipeline.semantics import DAILY, HOURLY, LEVEL_LENGTH, WEEKLY
from metrics_pipeline.sql.render import render
from metrics_pipeline.sql.warehouse import AGGREGATES, aggregate_rows_query, build_warehouse

_tables = build_warehouse()


def _sql_example(source: int, target: int) -> str:
    start = datetime(2025, 4, 6)
    return "\n\n".join(
        render(
            aggregate_rows_query(
                _tables.table(agg), source, [101], start, start + LEVEL_LENGTH[target]
            ),
            mssql.dialect(),
        )
        for agg in AGGREGATES
    )


HOW = {
    DAILY: "Sum of the day's 24 hourly rows (rates recomputed from the summed counts, "
    "percentiles from the merged hourly sketches); today's row is updated through the day.",
    WEEKLY: "Sum of the week's 7 daily rows, Sunday 00:00 to Sunday 00:00 UTC; the current "
    "week's row is updated as the week goes on.",
}

daily_specs = [
    aggregate_spec(
        agg,
        DAILY,
        _tables.table(agg),
        daily_partitions,
        deps=[rollup_dep(asset_key(agg, HOURLY), daily_from_hourly)],
        how=HOW[DAILY],
        sql_example=_sql_example(HOURLY, DAILY),
    )
    for agg in AGGREGATES
]

weekly_specs = [
    aggregate_spec(
        agg,
        WEEKLY,
        _tables.table(agg),
        weekly_partitions,
        deps=[rollup_dep(asset_key(agg, DAILY), weekly_from_daily)],
        how=HOW[WEEKLY],
        sql_example=_sql_example(DAILY, WEEKLY),
    )
    for agg in AGGREGATES
]


def _run_rollup(context: AssetExecutionContext, warehouse, specs, source: int, target: int):
    started = utcnow()
    requested = group_by_biller(context.partition_keys, parse_partition_key)
    with plain_failures():
        outcome = roll_up(requested, source, target, warehouse)
    dialect = warehouse.engine().dialect
    first = min(s for starts in requested.values() for s in starts)
    sql = "\n\n".join(
        render(
            aggregate_rows_query(
                _tables.table(agg), source, sorted(requested), first, first + LEVEL_LENGTH[target]
            ),
            dialect,
        )
        for agg in AGGREGATES
    )
    context.log.info(f"{len(outcome.request_counts)} partitions rolled up")
    yield from finish(context, warehouse, outcome, started, specs, sql, hourly=False)


@multi_asset(
    name="daily_aggregates",
    specs=daily_specs,
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    description="Rolls the hourly rows of each requested biller-day up into the daily tables.",
)
def daily_aggregates(context: AssetExecutionContext, warehouse: WarehouseResource):
    yield from _run_rollup(context, warehouse, daily_specs, HOURLY, DAILY)


@multi_asset(
    name="weekly_aggregates",
    specs=weekly_specs,
    partitions_def=weekly_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    description="Rolls the daily rows of each requested biller-week up into the weekly tables.",
)
def weekly_aggregates(context: AssetExecutionContext, warehouse: WarehouseResource):
    yield from _run_rollup(context, warehouse, weekly_specs, DAILY, WEEKLY)
