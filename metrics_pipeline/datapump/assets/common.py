"""What the aggregate assets share: their specs, column lineage, and the run's scope."""

from collections.abc import Iterable, Mapping
from datetime import datetime

from dagster import (
    AssetDep,
    AssetKey,
    AssetSpec,
    MetadataValue,
    TableColumnDep,
    TableColumnLineage,
    TimeWindowPartitionsDefinition,
)
from sqlalchemy import Table

from metrics_pipeline.assets.columns import describe, table_schema
from metrics_pipeline.partitions import rollup_mapping
from metrics_pipeline.semantics import Level
from metrics_pipeline.sql.warehouse import Aggregate
from metrics_pipeline.tags import BILLERS_TAG

OWNERS = ["team:metrics-platform"]

SHARD_DETAIL = AssetKey(["shards", "DataPumpDetail"])
SHARD_OCCUPANCY = AssetKey(["shards", "BillerDataPump"])
CATALOG_BILLERS = AssetKey(["catalog", "BillerElasticOptions"])


#: Which raw shard columns each hourly column is computed from (analysts read it as lineage).
_SHARD_SOURCES = {
    "BillerId": ("BillerId",),
    "StartTime": ("CreatedDate",),
    "EndTime": ("CreatedDate",),
    "RequestCount": ("DataPumpDetailId", "CreatedDate"),
    "FailedRequests": ("StatusCode", "ResponseTime"),
    "ErrorRate": ("StatusCode", "ResponseTime"),
    "TimeOutCount": ("StatusCode", "ResponseTime"),
    "TimeoutRate": ("StatusCode", "ResponseTime"),
    # An hour is covered when its shard was read (not busy: BillerDataPump.Processing).
    "CoveredHours": ("CreatedDate",),
    "ExpectedHours": ("CreatedDate",),
}


#: Rolled-up columns that are not sums of the same column below: rates and averages are
#: recomputed from the summed counts, percentiles from the merged sketches.
_ROLLUP_SOURCES = {
    "ErrorRate": ("FailedRequests", "RequestCount"),
    "TimeoutRate": ("TimeOutCount", "RequestCount"),
    "AvgResponseTime": ("TotalResponseTime", "ResponseTimeCount"),
    "P50ResponseTime": ("ResponseTimeSketch",),
    "P95ResponseTime": ("ResponseTimeSketch",),
    "P99ResponseTime": ("ResponseTimeSketch",),
    "ExpectedHours": ("StartTime",),
}


def asset_key(aggregate: Aggregate, level: Level) -> AssetKey:
    return AssetKey(aggregate.asset_name(level))


def column_lineage(aggregate: Aggregate, level: Level) -> TableColumnLineage:
    """Hourly columns from the shard's raw columns; daily and weekly from the same column of the
    level below (rates are recomputed from the summed counts, so they also depend on those)."""
    columns = ["BillerId", "StartTime", "EndTime", *(v.name for v in aggregate.values)]
    if level.previous is None:
        deps = {
            c: [TableColumnDep(SHARD_DETAIL, s) for s in _SHARD_SOURCES.get(c, ("ResponseTime",))]
            for c in columns
        }
    else:
        below = asset_key(aggregate, level.previous)
        deps = {
            c: [TableColumnDep(below, s) for s in _ROLLUP_SOURCES.get(c, (c,))] for c in columns
        }
    return TableColumnLineage(deps_by_column=deps)


#: What the key and bookkeeping columns are (the value columns describe themselves).
_COLUMN_MEANINGS = {
    "BillerId": "The biller",
    "TimeStampTypeId": "The level: 1 hourly, 2 daily, 3 weekly (TimeStampType)",
    "StartTime": "Start of the window, UTC",
    "EndTime": "End of the window (exclusive), UTC",
    "CreatedDate": "When the pipeline first wrote the row",
    "UpdatedDate": "When the pipeline last changed the row",
}


def _source_text(deps: list[TableColumnDep]) -> str:
    """``DataPumpDetail.StatusCode, ResponseTime`` or ``error_rate_hourly.ErrorRate``."""
    by_asset: dict[str, list[str]] = {}
    for dep in deps:
        by_asset.setdefault(dep.asset_key.path[-1], []).append(dep.column_name)
    return "; ".join(f"{asset}.{', '.join(cols)}" for asset, cols in by_asset.items())


def column_descriptions(aggregate: Aggregate, level: Level, table: Table) -> dict[str, str]:
    """Every column's description, ending with the columns it is computed from (``← …``), so
    analysts read the column lineage in open-source Dagster, which does not draw it."""
    meanings = {**_COLUMN_MEANINGS, **{v.name: v.description for v in aggregate.values}}
    lineage = column_lineage(aggregate, level).deps_by_column
    out = {}
    for column in table.columns:
        if column.name in lineage:
            sources = _source_text(list(lineage[column.name]))
        elif column.name == "TimeStampTypeId":
            sources = level.title
        else:
            sources = None
        out[column.name] = describe(
            meanings.get(column.name, "Row identity in the warehouse"), sources
        )
    return out


def aggregate_spec(
    aggregate: Aggregate,
    level: Level,
    table: Table,
    partitions_def: TimeWindowPartitionsDefinition,
    how: str,
    sql_example: str,
) -> AssetSpec:
    schema = table_schema(table, column_descriptions(aggregate, level, table))
    if level.previous is None:
        deps: list = [SHARD_DETAIL, SHARD_OCCUPANCY, CATALOG_BILLERS]
    else:
        deps = [AssetDep(asset_key(aggregate, level.previous), partition_mapping=rollup_mapping())]
    return AssetSpec(
        key=asset_key(aggregate, level),
        description=(
            f"{aggregate.description}, {level.name} per biller (TimeStampTypeId {level.id}), in "
            f"warehouse table {aggregate.table}. One partition per {level.unit} holds every "
            f"enabled biller's row. {how}"
        ),
        group_name=level.group_name,
        owners=OWNERS,
        kinds={"sql", "python"},
        deps=deps,
        partitions_def=partitions_def,
        metadata={
            "dagster/column_schema": schema,
            "dagster/column_lineage": column_lineage(aggregate, level),
            "dagster/table_name": aggregate.table,
            "unique_key": MetadataValue.text("BillerId, TimeStampTypeId, StartTime"),
            # What a run sends, for one biller and window, as SQL Server reads it; every run also
            # attaches the exact statements it sent to its last partition's materialization.
            "sql_example": MetadataValue.md(f"```sql\n{sql_example}\n```"),
        },
        tags={"level": level.name},
    )


def run_billers(tags: Mapping[str, str], enabled: Iterable[int]) -> list[int]:
    """The billers a run computes: its ``metrics/billers`` tag, else every enabled biller."""
    text = tags.get(BILLERS_TAG, "").strip()
    if not text:
        return sorted(set(enabled))
    return sorted({int(b) for b in text.split(",") if b.strip()})


def requested_cells(
    billers: Iterable[int],
    windows: list[datetime],
    written: Mapping[datetime, set[str]] | None = None,
) -> dict[int, list[datetime]]:
    """{BillerId: windows} to compute; with ``written`` (the incomplete scope), only the windows
    whose ledger does not say the biller was written."""
    out: dict[int, list[datetime]] = {}
    for b in billers:
        wanted = [w for w in windows if written is None or str(b) not in written.get(w, set())]
        if wanted:
            out[b] = wanted
    return out
