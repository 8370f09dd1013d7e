"""Reading the warehouse for the API: series of points, billers, reference data."""

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import Engine, inspect, select
from sqlalchemy.exc import SQLAlchemyError

from metrics_pipeline.api.queries import (
    MAX_IN_LIST,
    METRIC_SOURCES,
    biller_exists_query,
    billers_query,
    metric_types_query,
    ping_statement,
    series_query,
    timestamp_types_query,
)
from metrics_pipeline.clock import as_naive_utc
from metrics_pipeline.coverage import STALE, WRITTEN
from metrics_pipeline.datapump.backlog import BacklogSettings
from metrics_pipeline.datapump.objectives import Objectives, read_states
from metrics_pipeline.datapump.sql import CatalogNames, catalog_table
from metrics_pipeline.health import UNCOVERED_STATES, FamilyHealth, family_health
from metrics_pipeline.resources.engines import DatabaseUnreachable, create_db_engine
from metrics_pipeline.semantics import HOURLY
from metrics_pipeline.sql.warehouse import (
    AGGREGATES,
    build_warehouse,
    ledger_states_query,
    ledger_windows_query,
    newest_window_query,
)

#: One point: the window's StartTime (naive UTC), the value, the window's RequestCount, and its
#: CoveredHours and ExpectedHours.
Point = tuple[datetime, int | float | None, int | None, int | None, int | None]


def availability(request_count: int | None, failed: int | None) -> float | None:
    """100 * (RequestCount - FailedRequests) / RequestCount to 2 decimals, half away from zero;
    None when there were no calls.

    Integer arithmetic equal to ``semantics.percentage`` (a test checks it on every pair up to
    a few thousand calls) at a fraction of its cost; the float is the nearest to the exact
    2-decimal value, so JSON prints it exactly.
    """
    if not request_count or failed is None:
        return None
    ok = request_count - failed
    # round(x) half up for x >= 0 is floor(x + 1/2): here x = 10000 * ok / request_count.
    cents = (20000 * ok + request_count) // (2 * request_count)
    return cents / 100


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
        more = len(rows) > limit
        rows = rows[:limit]
        if rows and rows[0][0].tzinfo is not None:
            rows = [(as_naive_utc(r[0]), *r[1:]) for r in rows]
        # Rows are (StartTime, CoveredHours, ExpectedHours, RequestCount[, value or
        # FailedRequests]); plain tuples are read by position, the cheapest way through a
        # 1000-row page.
        if source.value_column is None:
            points = [(t, availability(n, failed), n, c, e) for t, c, e, n, failed in rows]
        elif source.value_column == "RequestCount":
            points = [(t, n, n, c, e) for t, c, e, n in rows]
        else:
            points = [(t, value, n, c, e) for t, c, e, n, value in rows]
        return points, more

    def objectives(self, biller_id: int, end: datetime, min_requests: int) -> Objectives:
        """The biller's objectives judged at ``end`` (an empty answer: it has none)."""
        with self.engine.connect() as conn:
            return read_states(conn, self.tables, end, min_requests, [biller_id])

    def all_objectives(self, end: datetime, min_requests: int) -> Objectives:
        """Every biller's objectives judged at ``end``."""
        with self.engine.connect() as conn:
            return read_states(conn, self.tables, end, min_requests)

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

    def health(self, now: datetime, backlog: BacklogSettings) -> list[FamilyHealth]:
        """Every family's freshness, backlog and uncovered hours (four grouped reads of the
        coverage ledger); no family before anything was computed."""
        ledger = self.tables.ledger
        window = backlog.window(now, datetime.min)
        done = (WRITTEN, STALE)
        with self.engine.connect() as conn:
            if not inspect(conn).has_table(ledger.name, schema=ledger.schema):
                return []
            states = defaultdict(list)
            for r in conn.execute(ledger_states_query(ledger, HOURLY, UNCOVERED_STATES)):
                states[r.Family].append((as_naive_utc(r.StartTime), r.State))
            newest = {
                r.Family: as_naive_utc(r.newest)
                for r in conn.execute(newest_window_query(ledger, HOURLY, done))
            }
            written = defaultdict(set)
            spans = [window] + [
                (t - timedelta(hours=backlog.lookback_hours), t + HOURLY.length)
                for t in newest.values()
            ]
            for lo, hi in spans:
                for r in conn.execute(ledger_windows_query(ledger, HOURLY, done, lo, hi)):
                    written[r.Family].add(as_naive_utc(r.StartTime))
        return [
            family_health(f, now, states[f], written[f], newest.get(f), window)
            for f in sorted({*states, *newest})
        ]

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


class CatalogNamesReader:
    """Biller names from the catalog, for people (the portal's biller menu). Names are a
    courtesy: a catalog that cannot be read gives no names, never an error."""

    def __init__(self, url: str | None, names: CatalogNames = CatalogNames()):
        self.url, self.table, self.columns = url, catalog_table(names), names
        self._engine: Engine | None = None

    def names(self, biller_ids: list[int]) -> dict[str, str]:
        if not self.url or not biller_ids:
            return {}
        try:
            if self._engine is None:
                self._engine = create_db_engine(self.url, "catalog", connect_timeout_s=5)
            ids = self.table.c[self.columns.biller_id]
            name = self.table.c[self.columns.biller_name]
            out: dict[str, str] = {}
            with self._engine.connect() as conn:
                for i in range(0, len(biller_ids), MAX_IN_LIST):
                    chunk = biller_ids[i : i + MAX_IN_LIST]
                    query = select(ids, name).where(ids.in_(chunk))
                    for biller, text in conn.execute(query):
                        if text:
                            out[str(int(biller))] = str(text)
            return out
        except (DatabaseUnreachable, SQLAlchemyError):
            return {}

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
