"""The warehouse resource: schema upkeep, atomic idempotent writes, and reads of partials."""

import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr
from sqlalchemy import (
    Engine,
    Numeric,
    and_,
    bindparam,
    delete,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SAWarning

from metrics_pipeline.clock import as_naive_utc, utc_second
from metrics_pipeline.coverage import DATAPUMP, NOT_WRITTEN, LedgerEntry
from metrics_pipeline.partitions import contiguous_runs
from metrics_pipeline.resources.cursor import ShardCursor
from metrics_pipeline.resources.engines import (
    DatabaseUnreachable,
    EngineCache,
    describe_db_error,
    safe_url,
    upgrade_schema,
)
from metrics_pipeline.semantics import (
    HOURLY,
    METRIC_TYPES,
    TIMESTAMP_TYPES,
    Level,
    Partial,
    Sketch,
    round2,
)
from metrics_pipeline.sql.warehouse import (
    AGGREGATES,
    ERROR_RATE,
    RESPONSE_TIME,
    TIMEOUT_RATE,
    Warehouse,
    aggregate_rows_query,
    build_warehouse,
    ledger_counts_query,
    ledger_query,
    ledger_summary_query,
)
from metrics_pipeline.writes import WriteCounts

# SQLite stores NUMERIC as REAL; values are rounded to 2 decimals on the way in and out.
warnings.filterwarnings(
    "ignore", message=".*does \\*not\\* support Decimal objects.*", category=SAWarning
)

PartialKey = tuple[int, datetime]


@dataclass(frozen=True)
class LedgerSummary:
    """One entity's ledger windows in some states: how many, the oldest, and which states."""

    windows: int
    oldest: datetime
    states: tuple[str, ...]


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


def _covered(value, level: Level) -> int:
    """CoveredHours of a stored row. A row written before the column existed (NULL): an hourly
    row was only ever written from a read (1); a rolled-up row is not known to cover anything
    until the next run that touches it rewrites it."""
    if value is None:
        return 1 if level.previous is None else 0
    return int(value)


SCHEMA_ATTEMPTS = 5


def _lost_schema_race(exc: DBAPIError) -> bool:
    """Another process created the same table, index or reference row a moment earlier, or
    (SQLite) was switching a new file to WAL at the same moment: SQLite answers a lock
    deadlock between them at once ("database is locked") instead of waiting."""
    text_ = str(exc.orig if exc.orig is not None else exc).lower()
    return (
        isinstance(exc, IntegrityError)
        or "already exists" in text_
        or "duplicate" in text_
        or "database is locked" in text_
    )


#: A write that lost a race for new keys is run again; each retry finds more of its rows.
WRITE_ATTEMPTS = 5


def _upsert(
    conn,
    table,
    id_col,
    entity: str,
    level: Level,
    rows: dict[tuple, dict],
    now: datetime,
    compare: list[str],
    created: bool,
    where=None,
) -> dict[str, int]:
    """Insert new keys, update changed rows, leave equal rows alone. Rows are keyed by
    (entity value, StartTime) within one level (and the extra ``where``)."""
    # The existing rows, read for many entities at once: one SELECT per time run and 500
    # entities (SQL Server takes ~2,100 parameters), not one per entity.
    entities = sorted({ent for ent, _ in rows})
    existing: dict[tuple, dict] = {}
    for lo, hi in contiguous_runs(level, [start for _, start in rows], timedelta(days=7)):
        for i in range(0, len(entities), 500):
            query = select(
                id_col, table.c[entity], table.c.StartTime, *(table.c[c] for c in compare)
            ).where(
                and_(
                    table.c[entity].in_(entities[i : i + 500]),
                    table.c.TimeStampTypeId == level.id,
                    table.c.StartTime >= lo,
                    table.c.StartTime <= hi,
                    *([] if where is None else [where]),
                )
            )
            for r in conn.execute(query).mappings():
                key = (r[entity], as_naive_utc(r["StartTime"]))
                if key in rows:
                    existing[key] = dict(r)
    stamps = {"CreatedDate": now, "UpdatedDate": now} if created else {"UpdatedDate": now}
    inserts, updates, unchanged = [], [], 0
    for key, row in rows.items():
        old = existing.get(key)
        if old is None:
            inserts.append({**row, **stamps})
            continue
        same = all(
            _normalize(old[c], table.c[c].type) == _normalize(row[c], table.c[c].type)
            for c in compare
        )
        if same:
            unchanged += 1
        else:
            updates.append(
                {"_id": old[id_col.name], **{c: row[c] for c in compare}, "UpdatedDate": now}
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


def _delete_keys(conn, table, level: Level, keys: list[PartialKey]) -> int:
    """Delete the rows of these (BillerId, StartTime) keys of one level; the count deleted."""
    if not keys:
        return 0
    stmt = delete(table).where(
        and_(
            table.c.TimeStampTypeId == level.id,
            table.c.BillerId == bindparam("_biller"),
            table.c.StartTime == bindparam("_start"),
        )
    )
    result = conn.execute(stmt, [{"_biller": b, "_start": s} for b, s in keys])
    return max(0, result.rowcount or 0)


def _uncover(conn, table, keys: list[PartialKey]) -> None:
    """Hourly rows whose latest read failed keep their figures, but cover no hour any more."""
    stmt = (
        update(table)
        .where(
            and_(
                table.c.TimeStampTypeId == HOURLY.id,
                table.c.BillerId == bindparam("_biller"),
                table.c.StartTime == bindparam("_start"),
                table.c.CoveredHours != 0,
            )
        )
        .values(CoveredHours=0)
    )
    conn.execute(stmt, [{"_biller": b, "_start": s} for b, s in keys])


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
            self.url,
            "warehouse",
            connect_timeout_s=self.connect_timeout_s,
            must_exist=False,
            immediate_transactions=True,
        )

    def unreachable(self, exc: OperationalError) -> DatabaseUnreachable:
        """The one-line error of a warehouse that cannot be reached."""
        return DatabaseUnreachable("warehouse", safe_url(self.url), describe_db_error(exc))

    # --- schema -------------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create missing tables, columns and indexes and the reference rows. Idempotent, and
        safe when several processes do it at once (the loser of a race runs it again)."""
        with self._lock:
            if self._schema_ready:
                return
            for attempt in range(SCHEMA_ATTEMPTS):
                try:
                    self._ensure_schema_once()
                    break
                except DBAPIError as exc:
                    if attempt < SCHEMA_ATTEMPTS - 1 and _lost_schema_race(exc):
                        time.sleep(0.1 * (attempt + 1))
                        continue
                    if isinstance(exc, OperationalError):
                        raise self.unreachable(exc) from exc
                    raise
            self._schema_ready = True

    def _ensure_schema_once(self) -> None:
        wh = self.tables
        engine = self.engine()
        with engine.begin() as conn:
            upgrade_schema(conn, wh.metadata)
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
        self,
        level: Level,
        partials: Mapping[PartialKey, Partial],
        ledger: Iterable[LedgerEntry] = (),
        run_id: str | None = None,
        now: datetime | None = None,
        cursor: tuple[str, str, ShardCursor] | None = None,
        deletes: Iterable[PartialKey] = (),
    ) -> WriteCounts:
        """Upsert the three tables' rows for these (biller, StartTime) keys, delete the rows of
        the ``deletes`` keys (windows that no longer sum any written hour), and write their
        ledger rows, in one transaction.

        Unchanged rows are left alone (same Id, CreatedDate and UpdatedDate), changed rows are
        updated in place, new rows inserted: a re-run that finds the same data changes nothing,
        and a failure rolls everything back, leaving the previous rows intact. A concurrent
        writer of the same new keys makes the insert fail on the unique key; the transaction is
        then run again and finds its rows (so both writers end well, one row per key).
        """
        self.ensure_schema()
        ledger = list(ledger)
        deletes = sorted(set(deletes) - set(partials))
        wh = self.tables

        def work(conn, when) -> WriteCounts:
            stats = WriteCounts()
            for agg in AGGREGATES:
                table = wh.table(agg)
                gone = _delete_keys(conn, table, level, deletes)
                stats.deleted += gone
                stats.by_table.setdefault(agg.table, {})["deleted"] = gone
                rows = {
                    key: {
                        "BillerId": key[0],
                        "TimeStampTypeId": level.id,
                        "StartTime": key[1],
                        "EndTime": key[1] + level.length,
                        **{v.name: v.value(p) for v in agg.values},
                    }
                    for key, p in partials.items()
                }
                counts = _upsert(
                    conn,
                    table,
                    table.c[agg.id_column],
                    "BillerId",
                    level,
                    rows,
                    when,
                    ["EndTime", *(v.name for v in agg.values)],
                    created=True,
                )
                stats.by_table[agg.table].update(counts)
                stats.inserted += counts["inserted"]
                stats.updated += counts["updated"]
                stats.unchanged += counts["unchanged"]
            if ledger:
                self._upsert_ledger(conn, DATAPUMP, level, ledger, run_id, when)
            if cursor is not None:
                self._set_cursor(conn, *cursor, when)
            return stats

        return self._write(work, now)

    def record_ledger(
        self,
        family: str,
        level: Level,
        entries: Iterable[LedgerEntry],
        run_id: str | None = None,
        now: datetime | None = None,
    ) -> None:
        """Ledger rows on their own (windows that were not written: busy, unreachable, ...).

        A DataPump hour recorded in a state other than written or stale no longer covers its
        hour: its stored rows (from an earlier read) get CoveredHours 0 in the same transaction,
        so no rollup sums them and the API does not serve them until it is read again."""
        entries = list(entries)
        if not entries:
            return
        self.ensure_schema()
        uncovered = sorted(
            (int(e.entity), e.start)
            for e in entries
            if e.state in NOT_WRITTEN and e.entity.isdigit()
        )

        def work(conn, when) -> None:
            self._upsert_ledger(conn, family, level, entries, run_id, when)
            if family == DATAPUMP and level == HOURLY and uncovered:
                for agg in AGGREGATES:
                    _uncover(conn, self.tables.table(agg), uncovered)

        self._write(work, now)

    # --- cursors -------------------------------------------------------------------------------

    def read_cursors(self, family: str) -> dict[str, ShardCursor]:
        """{source: cursor} of a family's cursors."""
        self.ensure_schema()
        table = self.tables.cursors
        try:
            with self.engine().connect() as conn:
                rows = conn.execute(
                    select(table.c.Source, table.c.Position, table.c.Pending).where(
                        table.c.Family == family
                    )
                ).all()
        except OperationalError as exc:
            raise self.unreachable(exc) from exc
        return {
            r.Source: ShardCursor(
                int(r.Position), tuple(int(i) for i in (r.Pending or "").split(",") if i)
            )
            for r in rows
        }

    def advance_cursor(self, family: str, source: str, cursor: ShardCursor) -> None:
        """Set a cursor on its own (a source with nothing to write, or its first look)."""
        self._write(lambda conn, when: self._set_cursor(conn, family, source, cursor, when), None)

    def _set_cursor(self, conn, family: str, source: str, cursor: ShardCursor, when) -> None:
        table = self.tables.cursors
        key = and_(table.c.Family == family, table.c.Source == source)
        values = {
            "Position": cursor.position,
            "Pending": ",".join(map(str, cursor.pending)) or None,
            "UpdatedDate": when,
        }
        if not conn.execute(update(table).where(key).values(**values)).rowcount:
            conn.execute(table.insert(), {"Family": family, "Source": source, **values})

    def _upsert_ledger(self, conn, family, level, entries, run_id, when) -> None:
        table = self.tables.ledger
        rows = {
            (e.entity, e.start): {
                "Family": family,
                "EntityId": e.entity,
                "TimeStampTypeId": level.id,
                "StartTime": e.start,
                "State": e.state,
                "Reason": (e.reason or "")[:400] or None,
                "SourceRows": e.source_rows,
                "RunId": run_id,
            }
            for e in entries
        }
        _upsert(
            conn,
            table,
            table.c.CoverageLedgerId,
            "EntityId",
            level,
            rows,
            when,
            ["State", "Reason", "SourceRows", "RunId"],
            created=False,
            where=table.c.Family == family,
        )

    def _write(self, work, now: datetime | None):
        """Run ``work(conn, now)`` in one transaction, again if a concurrent writer inserted
        the same keys first (the unique key refuses the second insert)."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                with self.engine().begin() as conn:
                    return work(conn, now or utc_second())
            except IntegrityError:
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
            except OperationalError as exc:
                raise self.unreachable(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

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
            raise self.unreachable(exc) from exc

    # --- reads --------------------------------------------------------------------------------

    def read_partials(
        self, level: Level, billers: Iterable[int], start: datetime, end: datetime
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
                        covered_hours=_covered(r["CoveredHours"], level),
                        expected_hours=int(r["ExpectedHours"] or 0),
                    )
                for agg, attr, column in (
                    (ERROR_RATE, "failed_count", "FailedRequests"),
                    (TIMEOUT_RATE, "timeout_count", "TimeOutCount"),
                ):
                    query = aggregate_rows_query(wh.table(agg), level, billers, start, end)
                    for r in conn.execute(query).mappings():
                        key = (r["BillerId"], as_naive_utc(r["StartTime"]))
                        partial = out.get(key)
                        if partial is None:
                            partial = out[key] = Partial(request_count=int(r["RequestCount"]))
                        setattr(partial, attr, int(r[column] or 0))
        except OperationalError as exc:
            raise self.unreachable(exc) from exc
        return out

    def read_ledger(
        self,
        family: str,
        level: Level,
        start: datetime | None = None,
        end: datetime | None = None,
        states: tuple[str, ...] | None = None,
        updated_after: datetime | None = None,
        entities: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> dict[datetime, dict[str, LedgerEntry]]:
        """{window start: {entity: entry}} of the ledger rows with StartTime in [start, end)
        (or in ``states``, recorded after ``updated_after``), of ``entities`` if given; with
        ``limit``, the oldest ``limit`` rows."""
        self.ensure_schema()
        out: dict[datetime, dict[str, LedgerEntry]] = defaultdict(dict)
        query = ledger_query(
            self.tables.ledger,
            family,
            level,
            start,
            end,
            states,
            updated_after,
            None if entities is None else sorted(set(entities)),
            limit,
        )
        try:
            with self.engine().connect() as conn:
                for r in conn.execute(query):
                    when = as_naive_utc(r.StartTime)
                    out[when][r.EntityId] = LedgerEntry(
                        r.EntityId, when, r.State, r.Reason, r.SourceRows, r.RunId
                    )
        except OperationalError as exc:
            raise self.unreachable(exc) from exc
        return dict(out)

    def ledger_summary(
        self,
        family: str,
        level: Level,
        states: tuple[str, ...],
        before: datetime | None = None,
        since: datetime | None = None,
    ) -> dict[str, "LedgerSummary"]:
        """{entity: its windows in ``states`` (before ``before``, from ``since``): count,
        oldest, states}, however old they are."""
        self.ensure_schema()
        out: dict[str, LedgerSummary] = {}
        query = ledger_summary_query(self.tables.ledger, family, level, states, before, since)
        try:
            with self.engine().connect() as conn:
                for r in conn.execute(query):
                    oldest = as_naive_utc(r.oldest)
                    have = out.get(r.EntityId)
                    if have is None:
                        out[r.EntityId] = LedgerSummary(int(r.n), oldest, (r.State,))
                    else:
                        out[r.EntityId] = LedgerSummary(
                            have.windows + int(r.n),
                            min(have.oldest, oldest),
                            tuple(sorted({*have.states, r.State})),
                        )
        except OperationalError as exc:
            raise self.unreachable(exc) from exc
        return out

    def covered_counts(
        self,
        family: str,
        level: Level,
        start: datetime,
        end: datetime,
        states: tuple[str, ...],
        entities: Iterable[str],
    ) -> dict[datetime, int]:
        """{window start: entities (of ``entities``) whose ledger row is in ``states``}."""
        self.ensure_schema()
        entities = sorted(set(entities))
        out: dict[datetime, int] = defaultdict(int)
        try:
            with self.engine().connect() as conn:
                for i in range(0, len(entities), 1000):  # SQL Server allows ~2100 parameters
                    query = ledger_counts_query(
                        self.tables.ledger,
                        family,
                        level,
                        start,
                        end,
                        states,
                        entities[i : i + 1000],
                    )
                    for r in conn.execute(query):
                        out[as_naive_utc(r.StartTime)] += int(r.n)
        except OperationalError as exc:
            raise self.unreachable(exc) from exc
        return dict(out)

    def read_ledger_hours(
        self, family: str, level: Level, starts: Iterable[datetime]
    ) -> dict[datetime, dict[str, LedgerEntry]]:
        """The ledger rows of these windows only (one read per run of consecutive windows), for
        a refresh whose hours lie weeks apart."""
        out: dict[datetime, dict[str, LedgerEntry]] = {}
        for lo, hi in contiguous_runs(level, starts):
            out.update(self.read_ledger(family, level, lo, hi + level.length))
        return out
