"""Hourly aggregates: one shard read per biller-hour feeds the three seed tables."""

from datetime import datetime, timedelta

from dagster import AssetExecutionContext, BackfillPolicy, multi_asset
from sqlalchemy.dialects import mssql
from sqlalchemy.engine import make_url

from metrics_pipeline.aggregation import aggregate_hourly
from metrics_pipeline.assets.common import (
    CATALOG_BILLERS,
    SHARD_DETAIL,
    SHARD_OCCUPANCY,
    aggregate_spec,
    group_by_biller,
)
from metrics_pipeline.assets.reporting import finish, plain_failures
from metrics_pipeline.partitions import hourly_partitions, parse_partition_key
from metrics_pipeline.resources.databases import CatalogResource, ShardsResource
from metrics_pipeline.resources.warehouse import WarehouseResource, utcnow
from metrics_pipeline.semantics import DEFAULT_RULES, HOURLY
from metrics_pipeline.sql.render import render
from metrics_pipeline.sql.source import ShardNames, hourly_facts_query, hourly_percentiles_query
from metrics_pipeline.sql.warehouse import AGGREGATES, build_warehouse

HOW_HOURLY = (
    "Computed inside each shard by one GROUP BY per biller and hour (plus a window query for the "
    "exact percentiles); hours with no calls get a row with RequestCount 0 and NULL rates."
)

_tables = build_warehouse()
_EXAMPLE = (101, datetime(2025, 4, 10), datetime(2025, 4, 11))
_SQL_EXAMPLE = "\n\n".join(
    render(stmt, mssql.dialect())
    for stmt in (
        hourly_facts_query(ShardNames(), DEFAULT_RULES, [_EXAMPLE[0]], *_EXAMPLE[1:]),
        hourly_percentiles_query(ShardNames(), [_EXAMPLE[0]], *_EXAMPLE[1:]),
    )
)

hourly_specs = [
    aggregate_spec(
        agg,
        HOURLY,
        _tables.table(agg),
        hourly_partitions,
        deps=[SHARD_DETAIL, SHARD_OCCUPANCY, CATALOG_BILLERS],
        how=HOW_HOURLY,
        sql_example=_SQL_EXAMPLE,
    )
    for agg in AGGREGATES
]


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


@multi_asset(
    name="hourly_aggregates",
    specs=hourly_specs,
    partitions_def=hourly_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    pool="biller_shards",
    description="Reads each requested biller-hour once from its shard and writes the three "
    "hourly tables in one transaction per chunk.",
)
def hourly_aggregates(
    context: AssetExecutionContext,
    catalog: CatalogResource,
    shards: ShardsResource,
    warehouse: WarehouseResource,
):
    started = utcnow()
    requested = group_by_biller(context.partition_keys, parse_partition_key)
    with plain_failures():
        outcome = aggregate_hourly(requested, catalog, shards, warehouse, log=context.log.warning)
    first = min(s for starts in requested.values() for s in starts)
    chunk = timedelta(hours=shards.chunk_hours(len(requested)))
    sql = shard_sql(shards, sorted(requested), first, first + chunk)
    context.log.info(
        f"{len(outcome.request_counts)} biller-hours written from "
        f"{len(outcome.shards_read)} shard(s)"
    )
    yield from finish(context, warehouse, outcome, started, hourly_specs, sql, hourly=True)
