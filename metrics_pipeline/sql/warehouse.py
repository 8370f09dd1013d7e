"""The warehouse: its tables (the seed's names plus BillerId), and the statements that read them.

One definition serves everything: the DDL, the writes, the column schema shown in the Dagster UI
and the API's reads all come from :data:`AGGREGATES` below.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    Select,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    case,
    func,
    select,
)

from metrics_pipeline.semantics import HOURLY, PERCENTILES, Level, Partial


def _id_type():
    # SQLite only auto-increments an INTEGER PRIMARY KEY.
    return BigInteger().with_variant(Integer, "sqlite")


@dataclass(frozen=True)
class ValueColumn:
    name: str
    type_: object
    description: str
    value: Callable[[Partial], object]


@dataclass(frozen=True)
class Aggregate:
    """One seed table: its name, the stem of its asset names, and its value columns."""

    table: str
    asset_stem: str
    description: str
    values: tuple[ValueColumn, ...]

    @property
    def id_column(self) -> str:
        return f"{self.table}Id"

    def asset_name(self, level) -> str:
        """The name of this table's asset at ``level`` (``error_rate_hourly``)."""
        return f"{self.asset_stem}_{level.name}"


def _count(name: str, description: str, attr: str) -> ValueColumn:
    return ValueColumn(name, BigInteger, description, lambda p: getattr(p, attr))


def _decimal(name: str, precision: int, description: str, fn) -> ValueColumn:
    return ValueColumn(name, Numeric(precision, 2), description, fn)


REQUEST_COUNT = _count("RequestCount", "Every call of the biller in the window", "request_count")
#: How much a row knows, in every table and level: a row sums only hours that were read.
COVERAGE = (
    ValueColumn(
        "CoveredHours",
        Integer,
        "Hours read from the shard and summed into the row (1 for an hourly row; 0 for an hour "
        "whose latest read failed, which no rollup sums and the API does not serve)",
        lambda p: p.covered_hours,
    ),
    ValueColumn(
        "ExpectedHours",
        Integer,
        "Hours the window should hold when the row was written: up to and including the running "
        "hour, from the first partition on (1 hourly, 24 a closed day, 168 a closed week); the "
        "row is complete when CoveredHours equals it",
        lambda p: p.expected_hours,
    ),
)

RESPONSE_TIME = Aggregate(
    table="DataPumpResponseTimeAggregation",
    asset_stem="response_time",
    description="Average and p50/p95/p99 response time (ms) of a biller's DataPump calls",
    values=(
        REQUEST_COUNT,
        _count(
            "ResponseTimeCount",
            "Calls with a ResponseTime that is not NULL and >= 0",
            "response_time_count",
        ),
        _decimal(
            "TotalResponseTime",
            20,
            "Sum of valid ResponseTime (ms)",
            lambda p: p.total_response_time,
        ),
        _decimal(
            "AvgResponseTime",
            12,
            "TotalResponseTime / ResponseTimeCount, 2 decimals; NULL when no valid ResponseTime",
            lambda p: p.avg_response_time,
        ),
        *(
            _decimal(
                f"P{p}ResponseTime",
                12,
                f"{p}th percentile response time (nearest rank; exact hourly, within 1% rolled up)",
                (lambda q: lambda part: part.percentile(q))(p),
            )
            for p in PERCENTILES
        ),
        ValueColumn(
            "ResponseTimeSketch",
            Text,
            "Mergeable log-bucket histogram of valid ResponseTime ('bucket:count,...')",
            lambda p: p.sketch.encode(),
        ),
        *COVERAGE,
    ),
)

ERROR_RATE = Aggregate(
    table="DataPumpErrorAggregation",
    asset_stem="error_rate",
    description="Share of a biller's DataPump calls that failed (timeouts included)",
    values=(
        REQUEST_COUNT,
        _count("FailedRequests", "Timeouts and calls without a 200-399 status", "failed_count"),
        _decimal(
            "ErrorRate",
            5,
            "100 * FailedRequests / RequestCount, 2 decimals; NULL when no calls",
            lambda p: p.error_rate,
        ),
        *COVERAGE,
    ),
)

TIMEOUT_RATE = Aggregate(
    table="DataPumpTimeoutErrorAggregation",
    asset_stem="timeout_rate",
    description="Share of a biller's DataPump calls that timed out",
    values=(
        REQUEST_COUNT,
        _count(
            "TimeOutCount", "Status 408/504/'timeout' or ResponseTime >= 30000 ms", "timeout_count"
        ),
        _decimal(
            "TimeoutRate",
            5,
            "100 * TimeOutCount / RequestCount, 2 decimals; NULL when no calls",
            lambda p: p.timeout_rate,
        ),
        *COVERAGE,
    ),
)

AGGREGATES = (RESPONSE_TIME, ERROR_RATE, TIMEOUT_RATE)

KEY_COLUMNS = ("BillerId", "TimeStampTypeId", "StartTime")

#: The coverage ledger: one row per family, entity (a biller) and window, saying what the last
#: computation of that window did for the entity (written / busy / unreachable / failed) and why.
#: Sensors, checks, the CLI and the API read it as the one source of truth.
LEDGER_KEY = ("Family", "EntityId", "TimeStampTypeId", "StartTime")


@dataclass(frozen=True)
class Warehouse:
    """The warehouse tables bound to one MetaData (optionally in a schema)."""

    metadata: MetaData
    timestamp_type: Table
    metric_type: Table
    aggregates: dict[str, Table]
    job_log: Table
    ledger: Table
    cursors: Table
    objectives: Table

    def table(self, aggregate: Aggregate) -> Table:
        return self.aggregates[aggregate.table]


def build_warehouse(schema: str | None = None) -> Warehouse:
    md = MetaData(schema=schema)
    prefix = f"{schema}." if schema else ""
    timestamp_type = Table(
        "TimeStampType",
        md,
        Column("TimeStampTypeId", Integer, primary_key=True, autoincrement=False),
        Column("Name", String(50), nullable=False),
        Column("HierarchyLevel", Integer, nullable=False),
    )
    metric_type = Table(
        "MetricType",
        md,
        Column("MetricTypeId", Integer, primary_key=True, autoincrement=False),
        Column("Name", String(100), nullable=False),
        Column("Unit", String(50), nullable=False),
        Column("Description", String(400)),
    )
    aggregates = {}
    for agg in AGGREGATES:
        aggregates[agg.table] = Table(
            agg.table,
            md,
            Column(agg.id_column, _id_type(), primary_key=True, autoincrement=True),
            Column("BillerId", Integer, nullable=False),
            Column(
                "TimeStampTypeId",
                Integer,
                ForeignKey(f"{prefix}TimeStampType.TimeStampTypeId"),
                nullable=False,
            ),
            Column("StartTime", DateTime, nullable=False),
            Column("EndTime", DateTime, nullable=False),
            *(Column(v.name, v.type_, nullable=True) for v in agg.values),
            Column("CreatedDate", DateTime, nullable=False),
            Column("UpdatedDate", DateTime, nullable=False),
            UniqueConstraint(*KEY_COLUMNS, name=f"UQ_{agg.table}_Biller_Type_Start"),
        )
        # Reads are "one biller, one level, a time range"; the unique key serves them, and this
        # index serves the portal's "latest rows of every biller" scans by level and time.
        Index(
            f"IX_{agg.table}_Type_Start",
            aggregates[agg.table].c.TimeStampTypeId,
            aggregates[agg.table].c.StartTime,
        )
    job_log = Table(
        "DataPumpMetricAggregationJobLog",
        md,
        Column(
            "DataPumpMetricAggregationJobLogId", _id_type(), primary_key=True, autoincrement=True
        ),
        Column("ShardIdWithFailures", String(4000)),
        Column("Summary", String(4000)),
        Column("JobStartDateTime", DateTime, nullable=False),
        Column("JobEndDateTime", DateTime),
        Column("RunId", String(64)),
        Column("BillersProcessed", Integer),
        Column("BillersSkippedBusy", Integer),
        Column("BillersFailed", Integer),
    )
    ledger = Table(
        "CoverageLedger",
        md,
        Column("CoverageLedgerId", _id_type(), primary_key=True, autoincrement=True),
        Column("Family", String(32), nullable=False),
        Column("EntityId", String(100), nullable=False),
        Column("TimeStampTypeId", Integer, nullable=False),
        Column("StartTime", DateTime, nullable=False),
        Column("State", String(16), nullable=False),
        Column("Reason", String(400)),
        Column("SourceRows", BigInteger),
        Column("RunId", String(64)),
        Column("UpdatedDate", DateTime, nullable=False),
        UniqueConstraint(*LEDGER_KEY, name="UQ_CoverageLedger_Family_Entity_Type_Start"),
    )
    Index("IX_CoverageLedger_Type_Start_State", ledger.c.TimeStampTypeId, ledger.c.StartTime)
    # The retry sensor reads "what failed as busy or unreachable lately", whatever the hour.
    Index("IX_CoverageLedger_State_Updated", ledger.c.State, ledger.c.UpdatedDate)
    # One cursor per family and source (a shard): how far its changes were read. Advanced in the
    # same transaction as the rows computed from them.
    cursors = Table(
        "SourceCursor",
        md,
        Column("Family", String(32), primary_key=True),
        Column("Source", String(200), primary_key=True),
        Column("Position", BigInteger, nullable=False),
        # Ids at or below Position that did not exist when it was read (transactions not yet
        # committed): read again until they appear or fall out of the overlap.
        Column("Pending", Text),
        Column("UpdatedDate", DateTime, nullable=False),
    )
    # Operator-filled: a biller's service-level objectives (rates are shares in (0, 1), not
    # percentages); a biller without a row has no objective, a NULL column none of that kind.
    objectives = Table(
        "BillerObjective",
        md,
        Column("BillerId", Integer, primary_key=True, autoincrement=False),
        Column("ErrorRateObjective", Numeric(9, 6)),
        Column("TimeoutRateObjective", Numeric(9, 6)),
        Column("P95ResponseTimeObjectiveMs", Numeric(12, 2)),
        Column("UpdatedDate", DateTime, nullable=False),
    )
    return Warehouse(
        md, timestamp_type, metric_type, aggregates, job_log, ledger, cursors, objectives
    )


def add_column_ddl(table: Table, column: Column, dialect) -> str:
    """ALTER TABLE ... ADD <column> for upgrading a table created by an older version.

    The column is nullable so existing rows stay valid; "ADD" without "COLUMN" is accepted by
    SQL Server, PostgreSQL and SQLite alike."""
    preparer = dialect.identifier_preparer
    return (
        f"ALTER TABLE {preparer.format_table(table)} ADD {preparer.format_column(column)} "
        f"{column.type.compile(dialect=dialect)} NULL"
    )


def aggregate_rows_query(
    table: Table, level: Level, billers, start: datetime, end: datetime
) -> Select:
    """Rows of one level for some billers whose StartTime lies in [start, end)."""
    return select(table).where(
        and_(
            table.c.BillerId.in_(sorted(billers)),
            table.c.TimeStampTypeId == level.id,
            table.c.StartTime >= start,
            table.c.StartTime < end,
        )
    )


def ledger_query(
    ledger: Table,
    family: str,
    level: Level,
    start: datetime | None = None,
    end: datetime | None = None,
    states: tuple[str, ...] | None = None,
    updated_after: datetime | None = None,
    entities: list[str] | None = None,
    limit: int | None = None,
) -> Select:
    """The ledger rows of a family and level with StartTime in [start, end), or in some states
    and updated after a time, optionally of some entities only; with ``limit``, the oldest
    ``limit`` rows."""
    where = [ledger.c.Family == family, ledger.c.TimeStampTypeId == level.id]
    if start is not None:
        where += [ledger.c.StartTime >= start, ledger.c.StartTime < end]
    if states is not None:
        where.append(ledger.c.State.in_(list(states)))
    if updated_after is not None:
        where.append(ledger.c.UpdatedDate >= updated_after)
    if entities is not None:
        where.append(ledger.c.EntityId.in_(entities))
    query = select(
        ledger.c.EntityId,
        ledger.c.StartTime,
        ledger.c.State,
        ledger.c.Reason,
        ledger.c.SourceRows,
        ledger.c.RunId,
    ).where(and_(*where))
    if limit is not None:
        query = query.order_by(ledger.c.StartTime, ledger.c.EntityId).limit(limit)
    return query


def ledger_summary_query(
    ledger: Table,
    family: str,
    level: Level,
    states: tuple[str, ...],
    before: datetime | None,
    since: datetime | None = None,
) -> Select:
    """Per entity and state: how many windows are in ``states`` (with StartTime before
    ``before`` and from ``since``, if given) and the oldest of them, however old: what the retry
    sensor and the backlog check read first, one row per entity rather than one per window."""
    where = [
        ledger.c.Family == family,
        ledger.c.TimeStampTypeId == level.id,
        ledger.c.State.in_(list(states)),
    ]
    if before is not None:
        where.append(ledger.c.StartTime < before)
    if since is not None:
        where.append(ledger.c.StartTime >= since)
    return (
        select(
            ledger.c.EntityId,
            ledger.c.State,
            func.count().label("n"),
            func.min(ledger.c.StartTime).label("oldest"),
        )
        .where(and_(*where))
        .group_by(ledger.c.EntityId, ledger.c.State)
    )


def ledger_counts_query(
    ledger: Table,
    family: str,
    level: Level,
    start: datetime,
    end: datetime,
    states: tuple[str, ...],
    entities: list[str],
) -> Select:
    """Rows per window in some states, for some entities: how many billers each hour covers,
    counted in the warehouse (one row per hour crosses, not one per biller)."""
    return (
        select(ledger.c.StartTime, func.count().label("n"))
        .where(
            and_(
                ledger.c.Family == family,
                ledger.c.TimeStampTypeId == level.id,
                ledger.c.StartTime >= start,
                ledger.c.StartTime < end,
                ledger.c.State.in_(list(states)),
                ledger.c.EntityId.in_(entities),
            )
        )
        .group_by(ledger.c.StartTime)
    )


def ledger_states_query(ledger: Table, level: Level, states: tuple[str, ...]) -> Select:
    """Per family, window and state: the ledger rows in ``states``, however old (the not
    written windows are few; the state index finds them)."""
    return (
        select(ledger.c.Family, ledger.c.StartTime, ledger.c.State, func.count().label("n"))
        .where(and_(ledger.c.TimeStampTypeId == level.id, ledger.c.State.in_(list(states))))
        .group_by(ledger.c.Family, ledger.c.StartTime, ledger.c.State)
    )


def ledger_windows_query(
    ledger: Table, level: Level, states: tuple[str, ...], start: datetime | None, end: datetime
) -> Select:
    """Per family, the windows in [start, end) holding a ledger row in ``states`` (all before
    ``end`` when ``start`` is None)."""
    where = [
        ledger.c.TimeStampTypeId == level.id,
        ledger.c.State.in_(list(states)),
        ledger.c.StartTime < end,
    ]
    if start is not None:
        where.append(ledger.c.StartTime >= start)
    return (
        select(ledger.c.Family, ledger.c.StartTime)
        .where(and_(*where))
        .group_by(ledger.c.Family, ledger.c.StartTime)
    )


def newest_window_query(ledger: Table, level: Level, states: tuple[str, ...]) -> Select:
    """Per family, the newest window with a ledger row in ``states``."""
    return (
        select(ledger.c.Family, func.max(ledger.c.StartTime).label("newest"))
        .where(and_(ledger.c.TimeStampTypeId == level.id, ledger.c.State.in_(list(states))))
        .group_by(ledger.c.Family)
    )


def objectives_query(objectives: Table) -> Select:
    """Every biller's objectives row, by BillerId."""
    return select(objectives).order_by(objectives.c.BillerId)


def window_sums_query(
    table: Table, bad_column: str, billers, end: datetime, hours: tuple[int, ...]
) -> Select:
    """Per biller, over each window of ``hours`` hours ending at ``end``: the summed
    RequestCount and ``bad_column`` of the hourly rows that were read (CoveredHours > 0), and
    how many such hours (``requests_<h>h``, ``bad_<h>h``, ``hours_<h>h``). An hour not read
    has no row here: it is unknown, never zero."""
    longest = max(hours)
    columns = [table.c.BillerId]
    for h in hours:
        inside = table.c.StartTime >= end - HOURLY.length * h
        columns += [
            func.sum(case((inside, table.c.RequestCount), else_=0)).label(f"requests_{h}h"),
            func.sum(case((inside, table.c[bad_column]), else_=0)).label(f"bad_{h}h"),
            func.sum(case((inside, 1), else_=0)).label(f"hours_{h}h"),
        ]
    return (
        select(*columns)
        .where(
            and_(
                table.c.BillerId.in_(sorted(billers)),
                table.c.TimeStampTypeId == HOURLY.id,
                table.c.StartTime >= end - HOURLY.length * longest,
                table.c.StartTime < end,
                table.c.CoveredHours > 0,
            )
        )
        .group_by(table.c.BillerId)
    )


def hourly_p95_query(table: Table, billers, start: datetime, end: datetime) -> Select:
    """The read hourly rows' P95ResponseTime and ResponseTimeCount in [start, end)."""
    return select(
        table.c.BillerId, table.c.StartTime, table.c.ResponseTimeCount, table.c.P95ResponseTime
    ).where(
        and_(
            table.c.BillerId.in_(sorted(billers)),
            table.c.TimeStampTypeId == HOURLY.id,
            table.c.StartTime >= start,
            table.c.StartTime < end,
            table.c.CoveredHours > 0,
        )
    )
