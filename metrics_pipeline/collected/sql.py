"""SQLAlchemy Core for the family: the tables, and pure statement builders over them.

Every statement here compiles for SQL Server, PostgreSQL and SQLite (tests parse the mssql text
as T-SQL): no LIMIT, no tuple IN, and the exact median is a window function (ROW_NUMBER) inside
a plain GROUP BY rather than ``percentile_cont ... WITHIN GROUP``.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Delete,
    Float,
    Index,
    Insert,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Select,
    String,
    Table,
    UniqueConstraint,
    and_,
    case,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.sql.dml import Update

from metrics_pipeline.collected.rules import MAX_MAGNITUDE
from metrics_pipeline.sql.dialect import hour_floor

#: The name of the raw table's change cursor in ``CollectedMetricCursor``.
RAW_CURSOR = "CollectedMetric.Id"


@dataclass(frozen=True)
class CollectedTables:
    metadata: MetaData
    raw: Table
    hourly: Table
    cursor: Table


def build_tables(schema: str | None = None) -> CollectedTables:
    """The family's three warehouse tables (in ``schema`` when given)."""
    md = MetaData(schema=schema)
    raw = Table(
        "CollectedMetric",
        md,
        # The change cursor of the hourly statistics (SQLite auto-increments INTEGER only).
        Column("Id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("MessageId", String(201), nullable=False),
        Column("MetricKey", String(100), nullable=False),
        Column("App", String(100), nullable=False),
        Column("Value", Float(53), nullable=False),
        Column("CollectedAt", DateTime, nullable=False),
        Column("ReceivedAt", DateTime, nullable=False),
        UniqueConstraint("MessageId", "MetricKey", name="UQ_CollectedMetric_Message_Key"),
        Index("IX_CollectedMetric_CollectedAt", "CollectedAt"),
        Index("IX_CollectedMetric_Key_CollectedAt", "MetricKey", "CollectedAt"),
    )
    hourly = Table(
        "CollectedMetricHourly",
        md,
        Column("MetricKey", String(100), nullable=False),
        Column("StartTime", DateTime, nullable=False),
        Column("SampleCount", BigInteger, nullable=False),
        Column("Average", Float(53)),
        Column("Minimum", Float(53)),
        Column("Maximum", Float(53)),
        Column("Median", Float(53)),
        PrimaryKeyConstraint("MetricKey", "StartTime", name="PK_CollectedMetricHourly"),
        Index("IX_CollectedMetricHourly_StartTime", "StartTime"),
    )
    cursor = Table(
        "CollectedMetricCursor",
        md,
        Column("Name", String(100), primary_key=True),
        #: The raw table's max Id at the last refresh, and at the one before (the overlap).
        Column("Current", BigInteger, nullable=False),
        Column("Previous", BigInteger, nullable=False),
        Column("UpdatedAt", DateTime, nullable=False),
    )
    return CollectedTables(md, raw, hourly, cursor)


# --- raw rows ----------------------------------------------------------------------------------


def existing_rows(t: CollectedTables, message_ids: Sequence[str]) -> Select:
    """(MessageId, MetricKey) already stored for these messages: the idempotent insert skips
    them. The caller keeps each list well under SQL Server's 2,100 parameters."""
    return select(t.raw.c.MessageId, t.raw.c.MetricKey).where(t.raw.c.MessageId.in_(message_ids))


def insert_rows(t: CollectedTables) -> Insert:
    """INSERT of raw rows (executemany); the unique (MessageId, MetricKey) makes it race-safe."""
    return insert(t.raw)


def max_raw_id(t: CollectedTables) -> Select:
    return select(func.coalesce(func.max(t.raw.c.Id), 0))


def changed_hours(t: CollectedTables, after_id: int, up_to_id: int) -> Select:
    """The distinct UTC hours of the raw rows with ``after_id < Id <= up_to_id``."""
    hour = hour_floor(t.raw.c.CollectedAt)
    return (
        select(hour.label("StartTime"))
        .where(t.raw.c.Id > after_id, t.raw.c.Id <= up_to_id)
        .group_by(hour)
    )


def key_collected(t: CollectedTables, key: str) -> Select:
    """One row when ``key`` was ever collected (TOP 1 on SQL Server)."""
    return select(t.raw.c.MetricKey).where(t.raw.c.MetricKey == key).limit(1)


# --- hourly statistics -------------------------------------------------------------------------


def _in_hour(t: CollectedTables, start: datetime, end: datetime):
    return and_(t.raw.c.CollectedAt >= start, t.raw.c.CollectedAt < end)


def hour_stats_select(
    t: CollectedTables, start: datetime, end: datetime, key: str | None = None
) -> Select:
    """Per key, over raw rows with start <= CollectedAt < end: (MetricKey, StartTime,
    SampleCount, Average, Minimum, Maximum, Median), exact.

    The median is the average of the rows whose rank r (1-based, by value) satisfies
    n <= 2r <= n + 2: the middle row for an odd count n, the two middle rows for an even one.
    Values beyond +-MAX_MAGNITUDE (which the collector refuses; stored before that rule, or by
    another writer) are left out, so no statistic overflows to an infinity.
    """
    raw = t.raw.c
    where = and_(_in_hour(t, start, end), raw.Value.between(-MAX_MAGNITUDE, MAX_MAGNITUDE))
    if key is not None:
        where = and_(where, raw.MetricKey == key)
    ranked = (
        select(
            raw.MetricKey,
            raw.Value,
            func.row_number().over(partition_by=raw.MetricKey, order_by=raw.Value).label("r"),
            func.count().over(partition_by=raw.MetricKey).label("n"),
        )
        .where(where)
        .subquery("ranked")
    )
    middle = and_(ranked.c.r * 2 >= ranked.c.n, ranked.c.r * 2 <= ranked.c.n + 2)
    return select(
        ranked.c.MetricKey,
        literal(start, DateTime).label("StartTime"),
        func.count().label("SampleCount"),
        func.avg(ranked.c.Value).label("Average"),
        func.min(ranked.c.Value).label("Minimum"),
        func.max(ranked.c.Value).label("Maximum"),
        func.avg(case((middle, ranked.c.Value))).label("Median"),
    ).group_by(ranked.c.MetricKey)


HOURLY_COLUMNS = (
    "MetricKey",
    "StartTime",
    "SampleCount",
    "Average",
    "Minimum",
    "Maximum",
    "Median",
)


def delete_hours(t: CollectedTables, start: datetime, end: datetime) -> Delete:
    """The window's statistics rows (deleted and rewritten in one transaction)."""
    return delete(t.hourly).where(t.hourly.c.StartTime >= start, t.hourly.c.StartTime < end)


def count_hours(t: CollectedTables, start: datetime, end: datetime) -> Select:
    h = t.hourly.c
    return select(func.count()).where(h.StartTime >= start, h.StartTime < end)


def insert_hour_stats(t: CollectedTables, start: datetime, end: datetime) -> Insert:
    """INSERT ... SELECT of one hour's statistics, computed inside the warehouse."""
    return insert(t.hourly).from_select(HOURLY_COLUMNS, hour_stats_select(t, start, end))


def read_hour_stats(t: CollectedTables, key: str, start: datetime) -> Select:
    h = t.hourly.c
    return select(h.SampleCount, h.Average, h.Minimum, h.Maximum, h.Median).where(
        h.MetricKey == key, h.StartTime == start
    )


def hourly_key_known(t: CollectedTables, key: str) -> Select:
    return select(t.hourly.c.MetricKey).where(t.hourly.c.MetricKey == key).limit(1)


def plain_group_by(t: CollectedTables, start: datetime, end: datetime) -> Select:
    """The warehouse's own GROUP BY over the same rows (no median): the benchmark's baseline."""
    raw = t.raw.c
    hour = hour_floor(raw.CollectedAt)
    return (
        select(
            raw.MetricKey,
            hour.label("StartTime"),
            func.count(),
            func.avg(raw.Value),
            func.min(raw.Value),
            func.max(raw.Value),
        )
        .where(_in_hour(t, start, end))
        .group_by(raw.MetricKey, hour)
    )


# --- the change cursor -------------------------------------------------------------------------


def read_cursor(t: CollectedTables) -> Select:
    return select(t.cursor.c.Current, t.cursor.c.Previous).where(t.cursor.c.Name == RAW_CURSOR)


def insert_cursor(t: CollectedTables, current: int, previous: int, now: datetime) -> Insert:
    return insert(t.cursor).values(
        Name=RAW_CURSOR, Current=current, Previous=previous, UpdatedAt=now
    )


def advance_cursor(t: CollectedTables, seen: int, current: int, now: datetime) -> Update:
    """Move the cursor from ``current`` to ``seen`` (keeping ``current`` as the overlap); a
    no-op when another refresh moved it first (compare-and-set on Current)."""
    return (
        update(t.cursor)
        .where(t.cursor.c.Name == RAW_CURSOR, t.cursor.c.Current == current)
        .values(Current=max(seen, current), Previous=current, UpdatedAt=now)
    )
