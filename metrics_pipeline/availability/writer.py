"""Writes to the warehouse: one window of a table replaced by its new rows, keyed on the natural
key, in one transaction, and retried when a concurrent writer inserted the same keys first.

A re-run that finds the same data changes nothing (same Id, same UpdatedDate); a failure rolls
the whole window back, leaving the previous rows intact.
"""

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Engine, Table, and_, bindparam, delete, select, true, update
from sqlalchemy.exc import IntegrityError, OperationalError

from metrics_pipeline.availability import sql
from metrics_pipeline.clock import as_naive_utc, utc_second
from metrics_pipeline.resources.engines import DatabaseUnreachable, describe_db_error, safe_url
from metrics_pipeline.writes import WriteCounts

#: Attempts of a window write that loses an insert race (unique key) to a concurrent writer.
WRITE_ATTEMPTS = 5


def _same(a, b) -> bool:
    if isinstance(a, Decimal) or isinstance(b, Decimal):
        return a is not None and b is not None and Decimal(str(a)) == Decimal(str(b))
    if isinstance(a, datetime) or isinstance(b, datetime):
        return a is not None and b is not None and as_naive_utc(a) == as_naive_utc(b)
    return a == b


def _key_of(row: Mapping, key: Sequence[str]) -> tuple:
    return tuple(
        as_naive_utc(row[k]) if isinstance(row[k], (datetime, str)) and k == "StartTime" else row[k]
        for k in key
    )


def replace_window(
    conn,
    table: Table,
    key: Sequence[str],
    values: Sequence[str],
    where,
    rows: Iterable[dict],
    now: datetime,
    stamp: str | None = "UpdatedDate",
) -> WriteCounts:
    """Make the rows of ``table`` matching ``where`` equal to ``rows`` (by natural ``key``)."""
    new = {_key_of(r, key): r for r in rows}
    wanted = [table.c[c] for c in (*key, *values)]
    old = {_key_of(r, key): r for r in conn.execute(select(*wanted).where(where)).mappings()}
    counts = WriteCounts()
    inserts, updates, deletes = [], [], []
    for k, row in new.items():
        before = old.get(k)
        if before is None:
            inserts.append(
                {**{c: row[c] for c in (*key, *values)}, **({stamp: now} if stamp else {})}
            )
        elif all(_same(before[c], row[c]) for c in values):
            counts.unchanged += 1
        else:
            updates.append(
                {"_k_" + c: v for c, v in zip(key, k, strict=True)} | {c: row[c] for c in values}
            )
    deletes = [{"_k_" + c: v for c, v in zip(key, k, strict=True)} for k in old if k not in new]
    by_key = and_(*(table.c[c] == bindparam("_k_" + c) for c in key))
    if deletes:
        conn.execute(delete(table).where(by_key), deletes)
    if updates:
        stamped = {c: bindparam(c) for c in values} | ({stamp: now} if stamp else {})
        conn.execute(update(table).where(by_key).values(stamped), updates)
    if inserts:
        conn.execute(table.insert(), inserts)
    counts.inserted, counts.updated, counts.deleted = len(inserts), len(updates), len(deletes)
    return counts


@dataclass
class Store:
    """The family's warehouse: schema, reference tables, and the window writes."""

    engine: Engine
    tables: sql.AvailabilityTables = field(default_factory=sql.build_tables)
    #: True once the tables are known to exist (the API never creates them: it sets this).
    schema_ready: bool = False

    def unreachable(self, exc: Exception) -> DatabaseUnreachable:
        return DatabaseUnreachable(
            "warehouse", safe_url(str(self.engine.url)), describe_db_error(exc)
        )

    def ensure_schema(self) -> None:
        """Create the family's tables (reference tables included) when missing."""
        if self.schema_ready:
            return
        try:
            self.tables.metadata.create_all(self.engine, checkfirst=True)
        except OperationalError as exc:
            raise self.unreachable(exc) from exc
        self.schema_ready = True

    def transaction(self, work: Callable) -> object:
        """Run ``work(conn)`` in one transaction; again if a concurrent writer won the insert."""
        self.ensure_schema()
        for attempt in range(WRITE_ATTEMPTS):
            try:
                with self.engine.begin() as conn:
                    return work(conn)
            except IntegrityError:
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
            except OperationalError as exc:
                if "locked" in str(exc) and attempt < WRITE_ATTEMPTS - 1:  # SQLite writer lock
                    time.sleep(0.2 * (attempt + 1))
                    continue
                raise self.unreachable(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def read(self, statement) -> list[dict]:
        self.ensure_schema()
        try:
            with self.engine.connect() as conn:
                return [dict(r) for r in conn.execute(statement).mappings()]
        except OperationalError as exc:
            raise self.unreachable(exc) from exc

    # --- reference tables ---------------------------------------------------------------

    def oms_operations(self) -> list[str]:
        t = self.tables.oms_operation
        return [r["OperationName"] for r in self.read(select(t.c.OperationName))]

    def scenarios(self) -> dict[str, dict]:
        return {r["ScenarioId"]: r for r in self.read(select(self.tables.scenario))}

    def write_reference(
        self, scenarios: list[dict], customers: list[dict], operations: list[str]
    ) -> None:
        """Replace the three reference tables' rows (demo data; operators fill them their way)."""
        t = self.tables

        def work(conn):
            for table, key, value_cols, rows in (
                (t.scenario, ["ScenarioId"], ["ScenarioName", "AvailabilityTarget"], scenarios),
                (t.customer, ["PartnerId"], ["CustomerName"], customers),
                (
                    t.oms_operation,
                    ["OperationName"],
                    [],
                    [{"OperationName": o} for o in operations],
                ),
            ):
                replace_window(conn, table, key, value_cols, true(), rows, utc_second(), stamp=None)

        self.transaction(work)

    # --- the family's writes ------------------------------------------------------------

    def write_hour(
        self,
        hour: datetime,
        minutes: list[dict],
        sketches: dict[str, str],
        ingest: dict,
        files: Mapping[str, tuple[int, int]],
    ) -> WriteCounts:
        """The hour's minute rows, latency sketches, ledger row and file cursor, together."""
        t = self.tables
        end = hour + sql.ONE_HOUR
        now = utc_second()

        def work(conn):
            counts = replace_window(
                conn,
                t.minute,
                sql.KEY_COLUMNS,
                sql.VALUE_COLUMNS,
                sql.in_window(t.minute, hour, end),
                minutes,
                now,
            )
            replace_window(
                conn,
                t.sketch,
                ("StartTime", "ScenarioId"),
                ("Sketch",),
                sql.in_window(t.sketch, hour, end),
                [{"StartTime": hour, "ScenarioId": s, "Sketch": v} for s, v in sketches.items()],
                now,
            )
            replace_window(
                conn,
                t.ingest,
                ("StartTime",),
                ("Files", "EventsRead", "Duplicates", "Kept", "Details"),
                t.ingest.c.StartTime == hour,
                [
                    {
                        "StartTime": hour,
                        **ingest,
                        "Details": json.dumps(ingest_details(ingest), sort_keys=True),
                    }
                ],
                now,
            )
            replace_window(
                conn,
                t.cursor,
                ("StartTime", "FileName"),
                ("Size", "MTimeNs"),
                t.cursor.c.StartTime == hour,
                [
                    {"StartTime": hour, "FileName": n, "Size": s, "MTimeNs": m}
                    for n, (s, m) in files.items()
                ],
                now,
                stamp=None,
            )
            return counts

        return self.transaction(work)

    def write_rows(
        self,
        table: Table,
        key,
        values,
        start: datetime,
        end: datetime,
        rows: list[dict],
        extra=None,
    ) -> WriteCounts:
        where = sql.in_window(table, start, end)
        if extra is not None:
            where = and_(where, extra)
        return self.transaction(
            lambda conn: replace_window(conn, table, key, values, where, rows, utc_second())
        )

    def cursor(self, start: datetime, end: datetime) -> dict[datetime, dict[str, tuple[int, int]]]:
        """Files recorded per hour folder in [start, end)."""
        t = self.tables.cursor
        out: dict[datetime, dict[str, tuple[int, int]]] = {}
        for r in self.read(select(t).where(sql.in_window(t, start, end))):
            out.setdefault(as_naive_utc(r["StartTime"]), {})[r["FileName"]] = (
                int(r["Size"]),
                int(r["MTimeNs"]),
            )
        return out

    def ingested_hours(self, start: datetime, end: datetime) -> set[datetime]:
        t = self.tables.ingest
        return {
            as_naive_utc(r["StartTime"])
            for r in self.read(select(t.c.StartTime).where(sql.in_window(t, start, end)))
        }


def ingest_details(ingest: dict) -> dict:
    return {k: ingest[k] for k in ("dropped", "scenario_levels", "partner_levels") if k in ingest}
