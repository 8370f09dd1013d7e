"""Hourly aggregates: each hour partition reads every enabled biller's calls from its shard."""

from datetime import date, datetime, timedelta

from dagster import AssetExecutionContext, AssetsDefinition, BackfillPolicy, multi_asset
from sqlalchemy.dialects import mssql
from sqlalchemy.engine import make_url

from metrics_pipeline.clock import utc_second
from metrics_pipeline.coverage import DATAPUMP, RETRYABLE, STALE, WRITTEN
from metrics_pipeline.datapump.assets.common import aggregate_spec, requested_cells, run_billers
from metrics_pipeline.datapump.assets.reporting import CoverageSettings, finish, plain_failures
from metrics_pipeline.datapump.pipeline import aggregate_hourly, detect_changes, first_cursors
from metrics_pipeline.datapump.refresh import ChangeSettings, encode_hours
from metrics_pipeline.datapump.shards import CatalogResource, ShardsResource
from metrics_pipeline.datapump.sql import ShardNames, hourly_facts_query, hourly_percentiles_query
from metrics_pipeline.partitions import first_window, partitions_def, windows_of
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import DEFAULT_RULES, HOURLY
from metrics_pipeline.sql.render import render
from metrics_pipeline.sql.warehouse import AGGREGATES, build_warehouse
from metrics_pipeline.tags import BILLERS_TAG, CHANGES_TAG, SCOPE_INCOMPLETE, SCOPE_TAG, TOUCHED_TAG

HOW_HOURLY = (
    "Computed inside each shard by one GROUP BY per biller and hour (plus a window query for the "
    "exact percentiles); hours with no calls get a row with RequestCount 0 and NULL rates."
)


def _sql_example() -> str:
    biller, start = 101, datetime(2025, 4, 10)
    return "\n\n".join(
        render(stmt, mssql.dialect())
        for stmt in (
            hourly_facts_query(ShardNames(), DEFAULT_RULES, [biller], start, start + timedelta(1)),
            hourly_percentiles_query(ShardNames(), [biller], start, start + timedelta(1)),
        )
    )


def shard_sql(shards: ShardsResource, billers: list[int], start: datetime, end: datetime) -> str:
    """The statements sent to each shard, compiled for the shards' own dialect."""
    dialect = make_url(shards.url_template.replace("{shard}", "shard")).get_dialect()()
    names, rules = shards.names.to_names(), shards.rules.to_rules()
    return "\n\n".join(
        render(stmt, dialect)
        for stmt in (
            hourly_facts_query(names, rules, billers, start, end),
            hourly_percentiles_query(names, billers, start, end),
        )
    )


def build_hourly_aggregates(start: date) -> AssetsDefinition:
    """The three hourly assets (one multi-asset: one shard read feeds all three tables)."""
    partitions = partitions_def(HOURLY, start)
    tables = build_warehouse()
    example = _sql_example()
    specs = [
        aggregate_spec(agg, HOURLY, tables.table(agg), partitions, HOW_HOURLY, example)
        for agg in AGGREGATES
    ]

    @multi_asset(
        name="hourly_aggregates",
        specs=specs,
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        pool="biller_shards",
        description="Reads the requested hours of every enabled biller (or of the billers in "
        "the run's metrics/billers tag) from their shards and writes the three hourly tables and "
        "the coverage ledger in one transaction per chunk.",
    )
    def hourly_aggregates(
        context: AssetExecutionContext,
        catalog: CatalogResource,
        shards: ShardsResource,
        warehouse: WarehouseResource,
    ):
        started = utc_second()
        hours = windows_of(HOURLY, start, context.partition_keys)
        tags = context.run.tags
        with plain_failures():
            enabled = [b.biller_id for b in catalog.enabled_billers()]
            billers = run_billers(tags, enabled)
            written = None
            if tags.get(SCOPE_TAG) == SCOPE_INCOMPLETE:
                ledger = warehouse.read_ledger(
                    DATAPUMP, HOURLY, hours[0], hours[-1] + HOURLY.length
                )
                written = {
                    h: {e for e, entry in rows.items() if entry.state == WRITTEN}
                    for h, rows in ledger.items()
                }
            requested = requested_cells(billers, hours, written)
            cursors, late = {}, []
            if BILLERS_TAG not in tags and SCOPE_TAG not in tags:
                cursors = first_cursors(catalog, shards, warehouse)
            if tags.get(CHANGES_TAG) == "true":
                changes = changed_cells(context, catalog, shards, warehouse, start, hours)
                cursors = {**cursors, **changes.cursors}
                for biller, cell_hours in changes.cells.items():
                    requested[biller] = sorted(set(requested.get(biller, [])) | cell_hours)
                late = sorted({h for hs in changes.cells.values() for h in hs} - set(hours))
            outcome = aggregate_hourly(
                requested,
                catalog,
                shards,
                warehouse,
                log=context.log.warning,
                run_id=context.run_id,
                cursors=cursors,
            )
        if late:
            # The daily and weekly runs of this refresh roll these hours up too.
            context.instance.add_run_tags(context.run_id, {TOUCHED_TAG: encode_hours(late)})
        first = hours[0]
        sql = shard_sql(shards, billers or [0], first, first + HOURLY.length)
        context.log.info(
            f"{len(outcome.request_counts)} biller-hours written from "
            f"{len(outcome.shards_read)} shard(s) for {len(hours)} hour(s)"
            + (f" and {len(late)} older hour(s) with late or changed rows" if late else "")
        )
        yield from finish(
            context,
            warehouse,
            outcome,
            started,
            specs,
            sql,
            HOURLY,
            start,
            hours,
            enabled,
            CoverageSettings.from_env(),
            extra_windows=late,
        )

    return hourly_aggregates


def changed_cells(context, catalog, shards, warehouse, start: date, hours: list[datetime]):
    """The refresh's change detection: cells beyond each shard's cursor, and the cells the
    ledger marks stale (reconciliation), limited to existing partitions."""
    settings = ChangeSettings.from_env()
    now = utc_second()
    changes = detect_changes(
        catalog,
        shards,
        warehouse,
        now,
        settings.initial_lookback,
        settings.overlap_ids,
        log=context.log.warning,
    )
    for hour, rows in warehouse.read_ledger(DATAPUMP, HOURLY, states=(STALE,)).items():
        for entity in rows:
            changes.add(int(entity), hour)
    # Hours left busy or unreachable, however old (the oldest first, bounded), so a refresh run
    # without a daemon heals them too; not those of a shard that did not answer just now.
    shard_of = {b.biller_id: b.shard for b in catalog.enabled_billers()}
    # Within the partitions only: hours outside them are never read again, and must not use up
    # the bound.
    first, last = first_window(HOURLY, start), max(hours[-1], HOURLY.floor(now))
    waiting = warehouse.read_ledger(
        DATAPUMP,
        HOURLY,
        first,
        last + HOURLY.length,
        states=RETRYABLE,
        limit=settings.heal_hours_per_refresh,
    )
    for hour, rows in waiting.items():
        for entity in rows:
            if entity.isdigit() and shard_of.get(int(entity)) not in (None, *changes.unreachable):
                changes.add(int(entity), hour)
    changes.cells = {b: {h for h in hs if first <= h <= last} for b, hs in changes.cells.items()}
    context.log.info(
        f"change detection: {changes.new_rows} row(s) beyond the cursors in "
        f"{sum(map(len, changes.cells.values()))} cell(s); "
        f"{len(changes.unreachable)} shard(s) unreachable"
    )
    return changes
