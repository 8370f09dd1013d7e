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

from metrics_pipeline.collected.rules import MAX_MAGNITUDE, PERCENTILES
from metrics_pipeline.sql.dialect import hour_floor

#: The name of the raw table's change cursor in ``CollectedMetricCursor``.
RAW_CURSOR = "CollectedMetric.Id"


@dataclass(frozen=True)
class CollectedTables:
    metadata: MetaData
    raw: Table
    hourly: Table
    cursor: Table
    #: The statistics per (App, MetricKey, StartTime); ``hourly`` is the all-apps figure.
    app_hourly: Table

    def stats_table(self, app: str | None) -> Table:
        return self.hourly if app is None else self.app_hourly


def _stat_columns() -> list[Column]:
    return [
        Column("SampleCount", BigInteger, nullable=False),
        Column("Average", Float(53)),
        Column("Minimum", Float(53)),
        Column("Maximum", Float(53)),
        Column("Median", Float(53)),
        # Added in place to tables of older versions (nullable: their rows have none).
        Column("P95", Float(53)),
        Column("P99", Float(53)),
    ]


def _stats_table(md: MetaData, name: str, groups: tuple[str, ...]) -> Table:
    """A statistics table: per ``groups`` and UTC hour (StartTime)."""
    return Table(
        name,
        md,
        *(Column(g, String(100), nullable=False) for g in groups),
        Column("StartTime", DateTime, nullable=False),
        *_stat_columns(),
        PrimaryKeyConstraint(*groups, "StartTime", name=f"PK_{name}"),
        Index(f"IX_{name}_StartTime", "StartTime"),
    )


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
        Index("IX_CollectedMetric_App_Key_CollectedAt", "App", "MetricKey", "CollectedAt"),
        # Never reuse an Id once retention deleted the newest rows (the cursor is on Id).
        sqlite_autoincrement=True,
    )
    hourly = _stats_table(md, "CollectedMetricHourly", ("MetricKey",))
    app_hourly = _stats_table(md, "CollectedMetricAppHourly", ("App", "MetricKey"))
    cursor = Table(
        "CollectedMetricCursor",
        md,
        Column("Name", String(100), primary_key=True),
        #: The raw table's max Id at the last refresh, and at the one before (the overlap).
        Column("Current", BigInteger, nullable=False),
        Column("Previous", BigInteger, nullable=False),
        Column("UpdatedAt", DateTime, nullable=False),
    )
    return CollectedTables(md, raw, hourly, cursor, app_hourly)


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


def hour_collected(t: CollectedTables, start: datetime, end: datetime) -> Select:
    """One row when the window has raw rows (TOP 1 on SQL Server)."""
    return select(t.raw.c.Id).where(_in_hour(t, start, end)).limit(1)


def key_collected(t: CollectedTables, key: str, app: str | None = None) -> Select:
    """One row when ``key`` was ever collected (from ``app``) (TOP 1 on SQL Server)."""
    where = [t.raw.c.MetricKey == key] + ([t.raw.c.App == app] if app is not None else [])
    return select(t.raw.c.MetricKey).where(*where).limit(1)


# --- hourly statistics -------------------------------------------------------------------------


def _in_hour(t: CollectedTables, start: datetime, end: datetime):
    return and_(t.raw.c.CollectedAt >= start, t.raw.c.CollectedAt < end)


def hour_stats_select(
    t: CollectedTables,
    start: datetime,
    end: datetime,
    key: str | None = None,
    app: str | None = None,
    by_app: bool = False,
) -> Select:
    """Per key (per app and key with ``by_app``), over raw rows with start <= CollectedAt < end
    (of ``key`` and ``app`` when given): ([App,] MetricKey, StartTime, SampleCount, Average,
    Minimum, Maximum, Median, P95, P99), exact.

    With rank r (1-based, by value) and count n: the median is the average of the rows with
    n <= 2r <= n + 2 (the middle row for an odd count, the two middle rows for an even one);
    the p-th percentile is the row of the smallest r with 100 r >= p n (nearest rank).
    Values beyond +-MAX_MAGNITUDE (which the collector refuses; stored before that rule, or by
    another writer) are left out, so no statistic overflows to an infinity.
    """
    raw = t.raw.c
    where = and_(_in_hour(t, start, end), raw.Value.between(-MAX_MAGNITUDE, MAX_MAGNITUDE))
    if key is not None:
        where = and_(where, raw.MetricKey == key)
    if app is not None:
        where = and_(where, raw.App == app)
    groups = [raw.App, raw.MetricKey] if by_app else [raw.MetricKey]
    ranked = (
        select(
            *groups,
            raw.Value,
            func.row_number().over(partition_by=groups, order_by=raw.Value).label("r"),
            func.count().over(partition_by=groups).label("n"),
        )
        .where(where)
        .subquery("ranked")
    )
    r, n = ranked.c.r, ranked.c.n
    middle = and_(r * 2 >= n, r * 2 <= n + 2)
    outer = [ranked.c[c.name] for c in groups]
    percentiles = [
        func.max(case((and_(r * 100 >= p * n, (r - 1) * 100 < p * n), ranked.c.Value))).label(
            f"P{p}"
        )
        for p in PERCENTILES.values()
    ]
    return select(
        *outer,
        literal(start, DateTime).label("StartTime"),
        func.count().label("SampleCount"),
        func.avg(ranked.c.Value).label("Average"),
        func.min(ranked.c.Value).label("Minimum"),
        func.max(ranked.c.Value).label("Maximum"),
        func.avg(case((middle, ranked.c.Value))).label("Median"),
        *percentiles,
    ).group_by(*outer)


#: The statistics columns, in the order hour_stats_select gives them after the groups.
STAT_COLUMNS = ("SampleCount", "Average", "Minimum", "Maximum", "Median", "P95", "P99")
HOURLY_COLUMNS = ("MetricKey", "StartTime", *STAT_COLUMNS)
APP_HOURLY_COLUMNS = ("App", "MetricKey", "StartTime", *STAT_COLUMNS)


def delete_hours(
    t: CollectedTables, start: datetime, end: datetime, by_app: bool = False
) -> Delete:
    """The window's statistics rows (deleted and rewritten in one transaction)."""
    table = t.app_hourly if by_app else t.hourly
    return delete(table).where(table.c.StartTime >= start, table.c.StartTime < end)


def count_hours(t: CollectedTables, start: datetime, end: datetime, by_app: bool = False) -> Select:
    h = (t.app_hourly if by_app else t.hourly).c
    return select(func.count()).where(h.StartTime >= start, h.StartTime < end)


def count_per_hour(
    t: CollectedTables, start: datetime, end: datetime, by_app: bool = False
) -> Select:
    """(StartTime, statistics rows) per hour of the window (all apps, or per app)."""
    h = (t.app_hourly if by_app else t.hourly).c
    return (
        select(h.StartTime, func.count())
        .where(h.StartTime >= start, h.StartTime < end)
        .group_by(h.StartTime)
    )


def insert_hour_stats(
    t: CollectedTables, start: datetime, end: datetime, by_app: bool = False
) -> Insert:
    """INSERT ... SELECT of one hour's statistics (all apps, or per app), computed inside the
    warehouse."""
    table, columns = (t.app_hourly, APP_HOURLY_COLUMNS) if by_app else (t.hourly, HOURLY_COLUMNS)
    return insert(table).from_select(columns, hour_stats_select(t, start, end, by_app=by_app))


def read_hour_stats(
    t: CollectedTables, key: str, start: datetime, app: str | None = None
) -> Select:
    """One hour's row of ``key`` (all apps, or of ``app``)."""
    return read_series(t, key, start, start, app)


def read_series(
    t: CollectedTables, key: str, first: datetime, last: datetime, app: str | None = None
) -> Select:
    """The rows of ``key`` (all apps, or of ``app``) for the hours first..last, by hour."""
    table = t.stats_table(app)
    h = table.c
    where = [h.MetricKey == key, h.StartTime >= first, h.StartTime <= last]
    if app is not None:
        where.append(h.App == app)
    return select(h.StartTime, *(h[c] for c in STAT_COLUMNS)).where(*where).order_by(h.StartTime)


def hourly_key_known(t: CollectedTables, key: str, app: str | None = None) -> Select:
    h = t.stats_table(app).c
    where = [h.MetricKey == key] + ([h.App == app] if app is not None else [])
    return select(h.MetricKey).where(*where).limit(1)


def known_series(t: CollectedTables, limit: int) -> Select:
    """The first ``limit`` (App, MetricKey) pairs that have statistics, in order."""
    h = t.app_hourly.c
    return select(h.App, h.MetricKey).distinct().order_by(h.App, h.MetricKey).limit(limit)


def app_known(t: CollectedTables, app: str) -> Select:
    """One row when ``app`` has statistics (TOP 1 on SQL Server)."""
    return select(t.app_hourly.c.App).where(t.app_hourly.c.App == app).limit(1)


def app_collected(t: CollectedTables, app: str) -> Select:
    return select(t.raw.c.App).where(t.raw.c.App == app).limit(1)


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
