"""The statements the API sends to the warehouse, over SQLAlchemy Core with bound parameters.

Every statement here also compiles for SQL Server: row limits go through ``.limit()`` (TOP there,
LIMIT elsewhere), lists are plain ``IN`` of scalars, never tuples.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Float, Select, Table, TextClause, and_, or_, select, text, type_coerce

from metrics_pipeline.semantics import METRIC_TYPES, MetricType
from metrics_pipeline.sql.warehouse import (
    ERROR_RATE,
    RESPONSE_TIME,
    TIMEOUT_RATE,
    Aggregate,
    Warehouse,
)


@dataclass(frozen=True)
class MetricSource:
    """Where a MetricType's points come from: a table, and a value column or a computation."""

    metric: MetricType
    aggregate: Aggregate
    #: The column read as the point's value; None when the value is computed (Availability).
    value_column: str | None
    #: Further columns the computation needs.
    extra_columns: tuple[str, ...] = ()


_BY_NAME = {m.name: m for m in METRIC_TYPES}

METRIC_SOURCES: dict[int, MetricSource] = {
    s.metric.id: s
    for s in (
        MetricSource(_BY_NAME["AvgResponseTime"], RESPONSE_TIME, "AvgResponseTime"),
        MetricSource(_BY_NAME["AvgErrorRate"], ERROR_RATE, "ErrorRate"),
        MetricSource(_BY_NAME["AvgTimeOutErrorRate"], TIMEOUT_RATE, "TimeoutRate"),
        MetricSource(_BY_NAME["Throughput"], RESPONSE_TIME, "RequestCount"),
        MetricSource(_BY_NAME["P50ResponseTime"], RESPONSE_TIME, "P50ResponseTime"),
        MetricSource(_BY_NAME["P95ResponseTime"], RESPONSE_TIME, "P95ResponseTime"),
        MetricSource(_BY_NAME["P99ResponseTime"], RESPONSE_TIME, "P99ResponseTime"),
        MetricSource(_BY_NAME["Availability"], ERROR_RATE, None, ("FailedRequests",)),
    )
}

#: Longest IN list sent (SQL Server takes at most 2100 parameters per statement).
MAX_IN_LIST = 500


def series_query(
    wh: Warehouse,
    source: MetricSource,
    biller_id: int,
    level: int,
    start: datetime,
    end: datetime,
    after: datetime | None,
    limit: int,
) -> Select:
    """One biller's rows of one level with StartTime in [start, end) and after ``after``, in time
    order, at most ``limit`` rows, with how many hours each covers of how many expected. Served
    by the (BillerId, TimeStampTypeId, StartTime) key."""
    table = wh.table(source.aggregate)
    columns = [table.c.StartTime, table.c.CoveredHours, table.c.ExpectedHours, table.c.RequestCount]
    if source.value_column is not None and source.value_column != "RequestCount":
        # The columns hold 2 decimals; read as float (the JSON number) without a Decimal per row.
        value = table.c[source.value_column]
        columns.append(type_coerce(value, Float()).label(value.name))
    columns.extend(table.c[name] for name in source.extra_columns)
    conditions = [
        table.c.BillerId == biller_id,
        table.c.TimeStampTypeId == level,
        table.c.StartTime >= start,
        table.c.StartTime < end,
        # An hour whose latest read failed keeps its old figures but is a gap, not a point.
        or_(table.c.CoveredHours.is_(None), table.c.CoveredHours > 0),
    ]
    if after is not None:
        conditions.append(table.c.StartTime > after)
    return select(*columns).where(and_(*conditions)).order_by(table.c.StartTime).limit(limit)


def biller_exists_query(table: Table, biller_id: int) -> Select:
    """One row (or none) of a biller in one aggregate table."""
    return select(table.c.BillerId).where(table.c.BillerId == biller_id).limit(1)


def billers_query(table: Table, only: Sequence[int] | None, limit: int) -> Select:
    """The distinct BillerIds of an aggregate table, in order, optionally among ``only``."""
    query = select(table.c.BillerId).distinct().order_by(table.c.BillerId).limit(limit)
    if only is not None:
        query = query.where(table.c.BillerId.in_(sorted(only)))
    return query


def metric_types_query(wh: Warehouse) -> Select:
    t = wh.metric_type
    return (
        select(t.c.MetricTypeId, t.c.Name, t.c.Unit, t.c.Description)
        .order_by(t.c.MetricTypeId)
        .limit(1000)
    )


def timestamp_types_query(wh: Warehouse) -> Select:
    t = wh.timestamp_type
    return (
        select(t.c.TimeStampTypeId, t.c.Name, t.c.HierarchyLevel)
        .order_by(t.c.TimeStampTypeId)
        .limit(1000)
    )


def ping_statement() -> TextClause:
    return text("SELECT 1")
