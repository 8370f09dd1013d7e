"""What the aggregate assets share: their specs, and partition keys grouped by biller."""

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from dagster import (
    AssetDep,
    AssetKey,
    AssetSpec,
    MetadataValue,
    MultiPartitionMapping,
    MultiPartitionsDefinition,
    TableColumn,
    TableSchema,
)
from sqlalchemy import Table

from metrics_pipeline.sql.warehouse import Aggregate

OWNERS = ["team:metrics-platform"]
LEVEL_NAMES = {1: "hourly", 2: "daily", 3: "weekly"}

SHARD_DETAIL = AssetKey(["shards", "DataPumpDetail"])
SHARD_OCCUPANCY = AssetKey(["shards", "BillerDataPump"])
CATALOG_BILLERS = AssetKey(["catalog", "BillerElasticOptions"])


def asset_key(aggregate: Aggregate, level: int) -> AssetKey:
    return AssetKey(f"{aggregate.asset_stem}_{LEVEL_NAMES[level]}")


def aggregate_spec(
    aggregate: Aggregate,
    level: int,
    table: Table,
    partitions_def: MultiPartitionsDefinition,
    deps: Iterable[AssetKey | AssetDep],
    how: str,
    sql_example: str,
) -> AssetSpec:
    descriptions = {v.name: v.description for v in aggregate.values}
    schema = TableSchema(
        columns=[
            TableColumn(name=c.name, type=str(c.type), description=descriptions.get(c.name, ""))
            for c in table.columns
        ]
    )
    return AssetSpec(
        key=asset_key(aggregate, level),
        description=(
            f"{aggregate.description}, {LEVEL_NAMES[level]} per biller "
            f"(TimeStampTypeId {level}), in warehouse table {aggregate.table}. {how}"
        ),
        group_name=f"metrics_{LEVEL_NAMES[level]}",
        owners=OWNERS,
        kinds={"sql", "python"},
        deps=list(deps),
        partitions_def=partitions_def,
        metadata={
            "dagster/column_schema": schema,
            "dagster/table_name": aggregate.table,
            "unique_key": MetadataValue.text("BillerId, TimeStampTypeId, StartTime"),
            # What a run sends, for one biller and window, as SQL Server reads it; every run also
            # attaches the exact statements it sent to its last partition's materialization.
            "sql_example": MetadataValue.md(f"```sql\n{sql_example}\n```"),
        },
        tags={"level": LEVEL_NAMES[level]},
    )


def rollup_dep(key: AssetKey, mapping: MultiPartitionMapping) -> AssetDep:
    return AssetDep(key, partition_mapping=mapping)


def group_by_biller(partition_keys: Iterable[str], parse) -> dict[int, list[datetime]]:
    """{BillerId: sorted window starts} for "<biller>|<time>" keys."""
    out: dict[int, list[datetime]] = defaultdict(list)
    for key in partition_keys:
        biller, start = parse(key)
        out[biller].append(start)
    return {b: sorted(v) for b, v in out.items()}
