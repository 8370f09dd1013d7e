"""Reading the warehouse for the API: series of points, billers, reference data."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Engine

from metrics_pipeline.api.queries import (
    MAX_IN_LIST,
    METRIC_SOURCES,
    MetricSource,
    biller_exists_query,
    billers_query,
    metric_types_query,
    ping_statement,
    series_query,
    timestamp_types_query,
)
from metrics_pipeline.resources.engines import DatabaseUnreachable, create_db_engine
from metrics_pipeline.semantics import percentage, round2
from metrics_pipeline.sql.source import as_naive_utc
from metrics_pipeline.sql.warehouse import AGGREGATES, build_warehouse


@dataclass(frozen=True)
class Point:
    start: datetime
    value: int | Decimal | None
    request_count: int | None


def point_value(source: MetricSource, row) -> int | Decimal | None:
    """The value of one row for a MetricType (Availability is computed, the rest are read)."""
    if source.value_column is None:
        failed = row.FailedRequests
        if row.RequestCount is None or failed is None:
            return None
        return percentage(int(row.RequestCount) - int(failed), int(row.RequestCount))
    value = getattr(row, source.value_column)
    if value is None:
        return None
    if source.value_column == "RequestCount":
        return int(value)
    return round2(value)


class WarehouseReader:
    """The API's read-only view of the warehouse. Creating it opens no connection."""

    def __init__(self, url: str, db_schema: str | None = None):
        try:
            self.engine: Engine = create_db_engine(url, "warehouse", connect_timeout_s=5)
        except DatabaseUnreachable as exc:
            # The API only reads: an absent SQLite warehouse means nothing was materialized yet.
            raise DatabaseUnreachable(
                exc.what, exc.url, f"{exc.reason} (`make demo` creates the demo warehouse)"
            ) from None
        self.tables = build_warehouse(db_schema)

    def dispose(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(ping_statement())

    def series(
        self,
        metric_type_id: int,
        biller_id: int,
        level: int,
        start: datetime,
        end: datetime,
        after: datetime | None,
        limit: int,
    ) -> tuple[list[Point], bool]:
        """Up to ``limit`` points in time order, and whether more follow."""
        source = METRIC_SOURCES[metric_type_id]
        query = series_query(self.tables, source, biller_id, level, start, end, after, limit + 1)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        points = [
            Point(
                as_naive_utc(row.StartTime),
                point_value(source, row),
                None if row.RequestCount is None else int(row.RequestCount),
            )
            for row in rows[:limit]
        ]
        return points, len(rows) > limit

    def biller_exists(self, biller_id: int) -> bool:
        """True when any aggregate table has a row of the biller."""
        with self.engine.connect() as conn:
            for agg in AGGREGATES:
                query = biller_exists_query(self.tables.table(agg), biller_id)
                if conn.execute(query).first() is not None:
                    return True
        return False

    def billers(self, only: frozenset[int] | None, limit: int) -> list[int]:
        """BillerIds that have rows, in order (among ``only`` when given), at most ``limit``."""
        table = self.tables.table(AGGREGATES[0])
        ids = None if only is None else sorted(only)
        # Chunks keep every IN list short (SQL Server takes at most 2100 parameters).
        chunks = (
            [None]
            if ids is None
            else [ids[i : i + MAX_IN_LIST] for i in range(0, len(ids), MAX_IN_LIST)]
        )
        found: list[int] = []
        with self.engine.connect() as conn:
            for chunk in chunks:
                found.extend(int(r[0]) for r in conn.execute(billers_query(table, chunk, limit)))
        return sorted(found)[:limit]

    def metric_types(self) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(metric_types_query(self.tables)).all()
        return [
            {"id": r.MetricTypeId, "name": r.Name, "unit": r.Unit, "description": r.Description}
            for r in rows
        ]

    def timestamp_types(self) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(timestamp_types_query(self.tables)).all()
        return [
            {"id": r.TimeStampTypeId, "name": r.Name, "hierarchyLevel": r.HierarchyLevel}
            for r in rows
        ]
