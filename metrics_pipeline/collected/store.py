"""The family's warehouse operations over an Engine: schema, idempotent raw inserts, hourly
statistics writes and the change cursor. Statements come from :mod:`.sql`."""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from metrics_pipeline.clock import utc_now
from metrics_pipeline.collected import sql
from metrics_pipeline.collected.rules import EMPTY, HourStats
from metrics_pipeline.resources.engines import upgrade_schema

#: Message ids per existence lookup (SQL Server takes at most 2,100 parameters).
LOOKUP_CHUNK = 1000
HOUR = timedelta(hours=1)


def as_datetime(value) -> datetime:
    """A DATETIME read back (SQLite returns computed ones as text)."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def stats_of(row) -> HourStats:
    """The HourStats of a statistics row (SampleCount, Average, ..., P99)."""
    # A row written before values were bounded may hold an infinity: unknown, not a number.
    values = [row[c] for c in sql.STAT_COLUMNS[1:]]
    return HourStats(
        row["SampleCount"], *(v if v is None or math.isfinite(v) else None for v in values)
    )


class HoursWritten(NamedTuple):
    """Statistics rows written: all-apps figures, and per app."""

    all_apps: int
    per_app: int


@dataclass(frozen=True)
class RefreshPlan:
    """What a refresh recomputes: the hours of the raw rows with previous < Id <= seen."""

    current: int | None  # None: no cursor row yet
    previous: int
    seen: int
    hours: tuple[datetime, ...]


class CollectedStore:
    """The collected tables in one warehouse."""

    def __init__(self, engine: Engine, schema: str | None = None):
        self.engine = engine
        self.t = sql.build_tables(schema)

    def ensure_schema(self) -> None:
        """Create the tables, and upgrade those of an older version in place."""
        with self.engine.begin() as conn:
            upgrade_schema(conn, self.t.metadata)

    # --- raw rows (the consumer) ----------------------------------------------------------------

    def insert_points(self, rows: Sequence[dict], attempts: int = 3) -> int:
        """Insert the rows whose (MessageId, MetricKey) is not stored yet, in one transaction;
        the number inserted.

        First optimistically as one plain INSERT (the common case: nothing stored yet); when
        the unique key refuses it (a redelivery, a client retry, a concurrent writer), again
        after looking up which rows are already there."""
        unique = list({(r["MessageId"], r["MetricKey"]): r for r in rows}.values())
        if not unique:
            return 0
        try:
            with self.engine.begin() as conn:
                conn.execute(sql.insert_rows(self.t), unique)
            return len(unique)
        except IntegrityError:
            pass
        for attempt in range(attempts):
            try:
                return self._insert_missing(unique)
            except IntegrityError:
                if attempt == attempts - 1:
                    raise
        return 0

    def _insert_missing(self, unique: list[dict]) -> int:
        missing = {(r["MessageId"], r["MetricKey"]): r for r in unique}
        ids = sorted({m for m, _ in missing})
        with self.engine.begin() as conn:
            for i in range(0, len(ids), LOOKUP_CHUNK):
                found = conn.execute(sql.existing_rows(self.t, ids[i : i + LOOKUP_CHUNK]))
                for row in found:
                    missing.pop((row.MessageId, row.MetricKey), None)
            if missing:
                conn.execute(sql.insert_rows(self.t), list(missing.values()))
        return len(missing)

    # --- hourly statistics ----------------------------------------------------------------------

    def write_hours(self, hours: Iterable[datetime]) -> HoursWritten:
        """Recompute the statistics of ``hours`` (all apps, and per app) from the raw rows,
        delete-then-insert in one transaction; the rows there afterwards. An hour without raw
        rows is left alone: raw rows only go by retention, which keeps the statistics."""
        hours = sorted(set(hours))
        if not hours:
            return HoursWritten(0, 0)
        with self.engine.begin() as conn:
            for start in hours:
                if conn.execute(sql.hour_collected(self.t, start, start + HOUR)).first() is None:
                    continue  # its points are gone (retention): its statistics stay as they are
                for by_app in (False, True):
                    conn.execute(sql.delete_hours(self.t, start, start + HOUR, by_app))
                    conn.execute(sql.insert_hour_stats(self.t, start, start + HOUR, by_app))
            # INSERT ... SELECT has no reliable rowcount on every driver: count what is there.
            end = hours[-1] + HOUR
            return HoursWritten(
                *(
                    conn.execute(sql.count_hours(self.t, hours[0], end, by_app)).scalar_one()
                    for by_app in (False, True)
                )
            )

    def rows_per_hour(self, hours: Iterable[datetime]) -> dict[datetime, HoursWritten]:
        """{hour: statistics rows there (all apps, per app)} for every hour of ``hours``."""
        hours = sorted(set(hours))
        out = {h: HoursWritten(0, 0) for h in hours}
        if not hours:
            return out
        counts: dict[bool, dict[datetime, int]] = {}
        with self.engine.connect() as conn:
            for by_app in (False, True):
                statement = sql.count_per_hour(self.t, hours[0], hours[-1] + HOUR, by_app)
                counts[by_app] = {
                    r[0].replace(tzinfo=None): int(r[1]) for r in conn.execute(statement)
                }
        for h in hours:
            out[h] = HoursWritten(counts[False].get(h, 0), counts[True].get(h, 0))
        return out

    def hour_stats(
        self, key: str, start: datetime, from_raw: bool = False, app: str | None = None
    ) -> HourStats:
        """One key's statistics for one hour (all apps, or of ``app``): from the statistics
        tables, or computed from the raw rows when ``from_raw`` (the running hour)."""
        statement = (
            sql.hour_stats_select(self.t, start, start + HOUR, key, app)
            if from_raw
            else sql.read_hour_stats(self.t, key, start, app)
        )
        with self.engine.connect() as conn:
            row = conn.execute(statement).mappings().first()
        return EMPTY if row is None else stats_of(row)

    def series(
        self, key: str, first: datetime, last: datetime, app: str | None = None
    ) -> dict[datetime, HourStats]:
        """The stored statistics of ``key`` (all apps, or of ``app``) for the hours
        first..last that have any."""
        with self.engine.connect() as conn:
            rows = conn.execute(sql.read_series(self.t, key, first, last, app)).mappings()
            return {as_datetime(r["StartTime"]): stats_of(r) for r in rows}

    def key_known(self, key: str, app: str | None = None) -> bool:
        """True when ``key`` (of ``app``) has statistics or raw rows."""
        return self._any(
            sql.hourly_key_known(self.t, key, app), sql.key_collected(self.t, key, app)
        )

    def known_series(self, limit: int) -> list[tuple[str, str]]:
        """(app, key) pairs with statistics, in order, at most ``limit``."""
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sql.known_series(self.t, limit))]

    def app_known(self, app: str) -> bool:
        """True when ``app`` has statistics or raw rows."""
        return self._any(sql.app_known(self.t, app), sql.app_collected(self.t, app))

    def _any(self, *statements) -> bool:
        with self.engine.connect() as conn:
            return any(conn.execute(s).first() is not None for s in statements)

    # --- the change cursor ----------------------------------------------------------------------

    def plan_refresh(self) -> RefreshPlan:
        """The hours changed since the cursor's previous position (one refresh of overlap: a
        consumer transaction still open at the last refresh may hold ids below its cursor)."""
        with self.engine.connect() as conn:
            row = conn.execute(sql.read_cursor(self.t)).first()
            current, previous = (row.Current, row.Previous) if row else (None, 0)
            seen = conn.execute(sql.max_raw_id(self.t)).scalar_one()
            hours = [
                as_datetime(r.StartTime)
                for r in conn.execute(sql.changed_hours(self.t, previous, seen))
            ]
        return RefreshPlan(current, previous, seen, tuple(sorted(hours)))

    def advance(self, plan: RefreshPlan) -> None:
        """Record that the plan's hours are written: the cursor moves to ``plan.seen``."""
        now = utc_now()
        with self.engine.begin() as conn:
            if plan.current is None:
                try:
                    with conn.begin_nested():
                        conn.execute(sql.insert_cursor(self.t, plan.seen, 0, now))
                    return
                except IntegrityError:
                    pass  # another refresh created it: fall through to the update
                current = conn.execute(sql.read_cursor(self.t)).first().Current
            else:
                current = plan.current
            conn.execute(sql.advance_cursor(self.t, plan.seen, current, now))
