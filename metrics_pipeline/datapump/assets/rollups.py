"""Daily and weekly aggregates: exact sums of the level below, never a second shard read."""

from datetime import date, datetime

from dagster import AssetExecutionContext, AssetsDefinition, BackfillPolicy, multi_asset
from sqlalchemy.dialects import mssql

from metrics_pipeline.clock import utc_second
from metrics_pipeline.datapump.assets.common import aggregate_spec, requested_cells, run_billers
from metrics_pipeline.datapump.assets.reporting import finish, plain_failures
from metrics_pipeline.datapump.pipeline import roll_up
from metrics_pipeline.datapump.refresh import decode_hours
from metrics_pipeline.datapump.shards import CatalogResource
from metrics_pipeline.partitions import first_window, partitions_def, windows_of
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import DAILY, HOURLY, WEEKLY, Level
from metrics_pipeline.sql.render import render
from metrics_pipeline.sql.warehouse import AGGREGATES, aggregate_rows_query, build_warehouse
from metrics_pipeline.tags import TOUCHED_TAG

HOW = {
    DAILY: "Sum of the day's written hourly rows (rates recomputed from the summed counts, "
    "percentiles from the merged hourly sketches), with CoveredHours of ExpectedHours (24 for a "
    "closed day); a biller-day with no written hour has no row. Today's row is updated through "
    "the day.",
    WEEKLY: "Sum of the week's daily rows, Sunday 00:00 to Sunday 00:00 UTC, with CoveredHours "
    "of ExpectedHours (168 for a closed week); a biller-week with no written hour has no row. "
    "The current week's row is updated as the week goes on.",
}


def _rows_sql(level: Level, billers: list[int], first: datetime, dialect) -> str:
    tables = build_warehouse()
    return "\n\n".join(
        render(
            aggregate_rows_query(
                tables.table(agg), level.previous, billers, first, first + level.length
            ),
            dialect,
        )
        for agg in AGGREGATES
    )


def build_rollup(level: Level, start: date) -> AssetsDefinition:
    """The three assets of ``level`` (daily or weekly), rolled up from the level below."""
    partitions = partitions_def(level, start)
    tables = build_warehouse()
    example = _rows_sql(level, [101], datetime(2025, 4, 6), mssql.dialect())
    specs = [
        aggregate_spec(agg, level, tables.table(agg), partitions, HOW[level], example)
        for agg in AGGREGATES
    ]

    @multi_asset(
        name=f"{level.name}_aggregates",
        specs=specs,
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        description=f"Rolls the {level.previous.name} rows of every enabled biller (or of the "
        f"billers in the run's metrics/billers tag) up into the {level.name} tables.",
    )
    def rollup_asset(
        context: AssetExecutionContext, catalog: CatalogResource, warehouse: WarehouseResource
    ):
        started = utc_second()
        windows = windows_of(level, start, context.partition_keys)
        # A refresh that recomputed older hours (late rows) rolls their days and weeks up too.
        first = first_window(level, start)
        touched = decode_hours(context.run.tags.get(TOUCHED_TAG, ""))
        late = sorted({level.floor(h) for h in touched if level.floor(h) >= first} - set(windows))
        with plain_failures():
            enabled = [b.biller_id for b in catalog.enabled_billers()]
            billers = run_billers(context.run.tags, enabled)
            outcome = roll_up(
                requested_cells(billers, sorted(windows + late)),
                level,
                warehouse,
                now=started,
                first_hour=first_window(HOURLY, start),
            )
        sql = _rows_sql(level, billers or [0], windows[0], warehouse.engine().dialect)
        context.log.info(
            f"{len(outcome.request_counts)} biller-{level.unit}s rolled up"
            + (
                f"; {len(outcome.uncovered)} biller-{level.unit}(s) with no written hour have "
                "no row"
                if outcome.uncovered
                else ""
            )
        )
        yield from finish(
            context,
            warehouse,
            outcome,
            started,
            specs,
            sql,
            level,
            start,
            windows,
            enabled,
            extra_windows=late,
        )

    return rollup_asset
