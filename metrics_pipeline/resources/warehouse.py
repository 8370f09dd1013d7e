"""The warehouse resource: schema upkeep, atomic idempotent writes, and reads of partials."""

import threading
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr
from sqlalchemy import Engine, Numeric, and_, bindparam, inspect, select, text, update
from sqlalchemy.exc import OperationalError, SAWarning

from metrics_pipeline.resources.engines import (
    DatabaseUnreachable,
    EngineCache,
    describe_db_error,
    safe_url,
)
from metrics_pipeline.semantics import (
    LEVEL_LENGTH,
    METRIC_TYPES,
    TIMESTAMP_TYPES,
    Partial,
    Sketch,
    round2,
)
from metrics_pipeline.sql.source import as_naive_utc
from metrics_pipeline.sql.warehouse import (
    AGGREGATES,
    ERROR_RATE,
    RESPONSE_TIME,
    TIMEOUT_RATE,
    Warehouse,
    add_column_ddl,
    aggregate_rows_query,
    build_warehouse,
)

# SQLite stores NUMERIC as REAL; values are rounded to 2 decimals on the way in and out.
warnings.filterwarnings(
    "ignore", message=".*does \\*not\\* support Decimal objects.*", category=SAWarning
)

PartialKey = tuple[int, datetime]


@dataclass
class WriteStats:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    by_table: dict[str, dict[str, int]] = field(default_factory=dict)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def _normalize(value, column_type):
    if value is None:
        return None
    if isinstance(column_type, Numeric):
        return round2(value)
    if isinstance(value, datetime) or (
        isinstance(value, str) and column_type.python_type is datetime
    ):
        return as_naive_utc(value)
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        return int(value)
    return value


def _contiguous_runs(starts: list[datetime]) -> list[tuple[datetime, datetime]]:
    """[min, max] spans of sorted start times, split where a gap is wider than a week."""
    runs: list[tuple[datetime, datetime]] = []
    for start in sorted(starts):
        if runs and (start - runs[-1][1]).days < 7:
            runs[-1] = (runs[-1][0], start)
        else:
            runs.append((start, start))
    return runs


class WarehouseResource(ConfigurableResource):
    """Where the aggregates live. Created and upgraded by the pipeline itself."""

    url: str = Field(description="SQLAlchemy URL of the warehouse (METRICS_WAREHOUSE_URL)")
    db_schema: str | None = Field(default=None, description="Database schema for all tables")
    connect_timeout_s: int = 15

    _engines: EngineCache = PrivateAttr(default_factory=EngineCache)
    _schema_ready: bool = PrivateAttr(default=False)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        self._engines.dispose()

    @property
    def tables(self) -> Warehouse:
        return build_warehouse(self.db_schema)

    def engine(self) -> Engine:
        return self._engines.get(
            self.url, "warehouse", connect_timeout_s=self.connect_timeout_s, must_exist=False
        )

    def _unreachable(self, exc: OperationalError) -> DatabaseUnreachable:
        return DatabaseUnreachable("warehouse", safe_url(self.url), describe_db_error(exc))

    # --- schema -------------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create missing tables, columns and indexes and the reference rows. Idempotent."""
        with self._lock:
            if self._schema_ready:
                return
            try:
                try:
                    self._ensure_schema_once()
                except OperationalError:
                    raise
                except Exception:
                    # Another process may have created the same table a moment earlier.
                    self._ensure_schema_once()
            except OperationalError as exc:
                raise self._unreachable(exc) from exc
            self._schema_ready = True

    def _ensure_schema_once(self) -> None:
        wh = self.tables
        engine = self.engine()
        with engine.begin() as conn:
            wh.metadata.create_all(conn, checkfirst=True)
            insp = inspect(conn)
            for table in wh.metadata.sorted_tables:
                have = {
                    c["name"].lower() for c in insp.get_columns(table.name, schema=table.schema)
                }
                for column in table.columns:
                    if column.name.lower() not in have:
                        conn.execute(text(add_column_ddl(table, column, conn.dialect)))
                indexes = {i["name"] for i in insp.get_indexes(table.name, schema=table.schema)}
                for index in table.indexes:
                    if index.name not in indexes:
                        index.create(conn)
            self._upsert_reference(
                conn,
                wh.timestamp_type,
                "TimeStampTypeId",
                [
                    {"TimeStampTypeId": t.id, "Name": t.name, "HierarchyLevel": t.hierarchy_level}
                    for t in TIMESTAMP_TYPES
                ],
            )
            self._upsert_reference(
                conn,
                wh.metric_type,
                "MetricTypeId",
                [
                    {
                        "MetricTypeId": m.id,
                        "Name": m.name,
                        "Unit": m.unit,
                        "Description": m.description,
                    }
                    for m in METRIC_TYPES
                ],
            )

    @staticmethod
    def _upsert_reference(conn, table, key: str, rows: list[dict]) -> None:
        existing = {r[key]: dict(r) for r in conn.execute(select(table)).mappings()}
        new = [r for r in rows if r[key] not in existing]
        changed = [r for r in rows if r[key] in existing and existing[r[key]] != r]
        if new:
            conn.execute(table.insert(), new)
        for row in changed:
            conn.execute(update(table).where(table.c[key] == row[key]).values(**row))

    # --- writes -------------------------------------------------------------------------------

    def write_partials(
        self, level: int, partials: Mapping[PartialKey, Partial], now: datetime | None = None
    ) -> WriteStats:
        """Upsert the three tables' rows for these (biller, StartTime) keys in one transaction.

        Unchanged rows are left alone (same Id, CreatedDate and UpdatedDate), changed rows are
        updated in place, new rows inserted: a re-run that finds the same data changes nothing,
        and a failure rolls everything back, leaving the previous rows intact.
        """
        self.ensure_schema()
        now = now or utcnow()
        length = LEVEL_LENGTH[level]
        stats = WriteStats()
        wh = self.tables
        try:
            with self.engine().begin() as conn:
                for agg in AGGREGATES:
                    table = wh.table(agg)
                    rows = {
                        key: {
                            "BillerId": key[0],
                            "TimeStampTypeId": level,
                            "StartTime": key[1],
                            "EndTime": key[1] + length,
                            **{v.name: v.value(p) for v in agg.values},
                        }
                        for key, p in partials.items()
                    }
                    counts = self._upsert(conn, table, agg, level, rows, now)
                    stats.by_table[agg.table] = counts
                    stats.inserted += counts["inserted"]
                    stats.updated += counts["updated"]
                    stats.unchanged += counts["unchanged"]
        except OperationalError as exc:
            raise self._unreachable(exc) from exc
        return stats

    @staticmethod
    def _upsert(conn, table, agg, level, rows: dict[PartialKey, dict], now) -> dict[str, int]:
        id_col = table.c[agg.id_column]
        compare = ["EndTime", *(v.name for v in agg.values)]
        by_biller: dict[int, list[datetime]] = defaultdict(list)
        for biller, start in rows:
            by_biller[biller].append(start)
        existing: dict[PartialKey, dict] = {}
        for biller, starts in by_biller.items():
            for lo, hi in _contiguous_runs(starts):
                query = select(id_col, table.c.StartTime, *(table.c[c] for c in compare)).where(
                    and_(
                        table.c.BillerId == biller,
                        table.c.TimeStampTypeId == level,
                        table.c.StartTime >= lo,
                        table.c.StartTime <= hi,
                    )
                )
                for r in conn.execute(query).mappings():
                    existing[(biller, as_naive_utc(r["StartTime"]))] = dict(r)
        inserts, updates, unchanged = [], [], 0
        for key, row in rows.items():
            old = existing.get(key)
            if old is None:
                inserts.append({**row, "CreatedDate": now, "UpdatedDate": now})
                continue
            same = all(
                _normalize(old[c], table.c[c].type) == _normalize(row[c], table.c[c].type)
                for c in compare
            )
            if same:
                unchanged += 1
            else:
                updates.append(
                    {"_id": old[agg.id_column], **{c: row[c] for c in compare}, "UpdatedDate": now}
                )
        if inserts:
            conn.execute(table.insert(), inserts)
        if updates:
            stmt = (
                update(table)
                .where(id_col == bindparam("_id"))
                .values({c: bindparam(c) for c in [*compare, "UpdatedDate"]})
            )
            conn.execute(stmt, updates)
        return {"inserted": len(inserts), "updated": len(updates), "unchanged": unchanged}

    def write_job_log(
        self,
        *,
        run_id: str,
        started: datetime,
        ended: datetime,
        processed: int,
        skipped_busy: int,
        failed: int,
        failed_shards: Iterable[str],
        summary: str,
    ) -> None:
        """One DataPumpMetricAggregationJobLog row per aggregation run (the seed's job log)."""
        self.ensure_schema()
        shards = ",".join(sorted(set(failed_shards))) or None
        try:
            with self.engine().begin() as conn:
                conn.execute(
                    self.tables.job_log.insert(),
                    {
                        "ShardIdWithFailures": shards,
                        "Summary": summary[:4000],
                        "JobStartDateTime": started,
                        "JobEndDateTime": ended,
                        "RunId": run_id,
                        "BillersProcessed": processed,
                        "BillersSkippedBusy": skipped_busy,
                        "BillersFailed": failed,
                    },
                )
        except OperationalError as exc:
            raise self._unreachable(exc) from exc

    # --- reads --------------------------------------------------------------------------------

    def present_keys(
        self, level: int, billers: Iterable[int], start: datetime, end: datetime
    ) -> set[PartialKey]:
        """(BillerId, StartTime) of the rows of ``level`` in [start, end). The three tables are
        written in one transaction, so one of them tells."""
        self.ensure_schema()
        table = self.tables.table(ERROR_RATE)
        billers = sorted(set(billers))
        keys: set[PartialKey] = set()
        try:
            with self.engine().connect() as conn:
                for i in range(0, len(billers), 500):  # SQL Server allows ~2100 parameters
                    query = select(table.c.BillerId, table.c.StartTime).where(
                        and_(
                            table.c.BillerId.in_(billers[i : i + 500]),
                            table.c.TimeStampTypeId == level,
                            table.c.StartTime >= start,
                            table.c.StartTime < end,
                        )
                    )
                    keys.update((int(b), as_naive_utc(t)) for b, t in conn.execute(query))
        except OperationalError as exc:
            raise self._unreachable(exc) from exc
        return keys

    def read_partials(
        self, level: int, billers: Iterable[int], start: datetime, end: datetime
    ) -> dict[PartialKey, Partial]:
        """The additive facts of stored rows of ``level`` with StartTime in [start, end)."""
        self.ensure_schema()
        billers = sorted(set(billers))
        wh = self.tables
        out: dict[PartialKey, Partial] = {}
        try:
            with self.engine().connect() as conn:
                rt = wh.table(RESPONSE_TIME)
                for r in conn.execute(
                    aggregate_rows_query(rt, level, billers, start, end)
                ).mappings():
                    out[(r["BillerId"], as_naive_utc(r["StartTime"]))] = Partial(
                        request_count=int(r["RequestCount"] or 0),
                        response_time_count=int(r["ResponseTimeCount"] or 0),
                        total_response_time=round2(r["TotalResponseTime"] or 0),
                        sketch=Sketch.decode(r["ResponseTimeSketch"]),
                    )
                for agg, attr, column in (
                    (ERROR_RATE, "failed_count", "FailedRequests"),
                    (TIMEOUT_RATE, "timeout_count", "TimeOutCount"),
                ):
                    query = aggregate_rows_query(wh.table(agg), level, billers, start, end)
                    for r in conn.execute(query).mappings():
                        key = (r["BillerId"], as_naive_utc(r["StartTime"]))
                        partial = out.setdefault(key, Partial(request_count=int(r["RequestCount"])))
                        setattr(partial, attr, int(r[column] or 0))
        except OperationalError as exc:
            raise self._unreachable(exc) from exc
        return out
