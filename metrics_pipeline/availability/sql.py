"""The availability family's warehouse tables (seed 001's names) and the statements over them,
as SQLAlchemy Core builders: (tables, window, ...) -> statement. Nothing here connects."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    Numeric,
    Select,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    func,
    select,
)

from metrics_pipeline.availability.rules import KEY_LENGTHS

KEY_COLUMNS = ("StartTime", "ScenarioId", "PartnerId", "RequestType", "Environment", "STID")
COUNT_COLUMNS = ("TotalRequests", "SuccessfulRequests", "FailedRequests", "LatencyCount")
ADDITIVE = (*COUNT_COLUMNS, "TotalLatency")
VALUE_COLUMNS = (*ADDITIVE, "AverageLatency")
PUBLISHED_KEY = ("ScenarioId", "TimeStampTypeId", "StartTime")
PUBLISHED_VALUES = (
    "ScenarioName",
    "TotalRequests",
    "SuccessfulRequests",
    "FailedRequests",
    "Availability",
    "AverageLatency",
    "P95Latency",
    "P99Latency",
)
HOURLY, DAILY = 1, 2
ONE_HOUR, ONE_DAY = timedelta(hours=1), timedelta(days=1)


def _id():
    return Column(
        "Id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )


def _key(name: str) -> Column:
    return Column(name, String(KEY_LENGTHS[name]), nullable=False)


def _aggregate_table(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        _id(),
        Column("StartTime", DateTime, nullable=False),
        *(_key(k) for k in KEY_COLUMNS[1:]),
        *(Column(c, BigInteger, nullable=False) for c in COUNT_COLUMNS),
        Column("TotalLatency", Numeric(24, 3), nullable=False),
        Column("AverageLatency", Numeric(14, 2)),
        Column("UpdatedDate", DateTime, nullable=False),
        UniqueConstraint(*KEY_COLUMNS, name=f"UQ_{name}"),
    )


@dataclass(frozen=True)
class AvailabilityTables:
    metadata: MetaData
    scenario: Table
    customer: Table
    oms_operation: Table
    minute: Table
    daily: Table
    published: Table
    sketch: Table
    ingest: Table
    cursor: Table

    def aggregate(self, level: int) -> Table:
        return self.minute if level == HOURLY else self.daily


def build_tables(schema: str | None = None) -> AvailabilityTables:
    md = MetaData(schema=schema)
    return AvailabilityTables(
        metadata=md,
        scenario=Table(
            "Scenario",
            md,
            Column("ScenarioId", String(200), primary_key=True),
            Column("ScenarioName", String(400), nullable=False),
            Column(
                "AvailabilityTarget", Numeric(6, 3), nullable=False, comment="percent, e.g. 99.9"
            ),
        ),
        customer=Table(
            "Customer",
            md,
            Column("PartnerId", String(200), primary_key=True),
            Column("CustomerName", String(400), nullable=False),
        ),
        oms_operation=Table(
            "OmsOperation", md, Column("OperationName", String(200), primary_key=True)
        ),
        minute=_aggregate_table(md, "AvailabilityMinute"),
        daily=_aggregate_table(md, "AvailabilityDaily"),
        published=Table(
            "AvailabilityPublished",
            md,
            _id(),
            Column("ScenarioId", String(200), nullable=False),
            Column("ScenarioName", String(400), nullable=False),
            Column("TimeStampTypeId", Integer, nullable=False, comment="1 hourly, 2 daily"),
            Column("StartTime", DateTime, nullable=False),
            *(Column(c, BigInteger, nullable=False) for c in COUNT_COLUMNS[:3]),
            Column("Availability", Numeric(5, 2)),
            Column("AverageLatency", Numeric(14, 2)),
            Column("P95Latency", Numeric(14, 2)),
            Column("P99Latency", Numeric(14, 2)),
            Column("UpdatedDate", DateTime, nullable=False),
            UniqueConstraint(*PUBLISHED_KEY, name="UQ_AvailabilityPublished"),
        ),
        sketch=Table(
            "AvailabilityLatencySketch",
            md,
            _id(),
            Column("StartTime", DateTime, nullable=False, comment="the hour"),
            Column("ScenarioId", String(200), nullable=False),
            Column(
                "Sketch", Text, nullable=False, comment="log-bucket histogram 'bucket:count,...'"
            ),
            Column("UpdatedDate", DateTime, nullable=False),
            UniqueConstraint("StartTime", "ScenarioId", name="UQ_AvailabilityLatencySketch"),
        ),
        ingest=Table(
            "AvailabilityIngest",
            md,
            Column("StartTime", DateTime, primary_key=True, comment="the hour folder"),
            Column("Files", Integer, nullable=False),
            Column("EventsRead", BigInteger, nullable=False),
            Column("Duplicates", BigInteger, nullable=False),
            Column("Kept", BigInteger, nullable=False),
            Column("Details", Text, nullable=False, comment="JSON: drops per rule, levels"),
            Column("UpdatedDate", DateTime, nullable=False),
        ),
        cursor=Table(
            "AvailabilityFileCursor",
            md,
            _id(),
            Column("StartTime", DateTime, nullable=False, comment="the hour folder"),
            Column("FileName", String(400), nullable=False),
            Column("Size", BigInteger, nullable=False),
            Column("MTimeNs", BigInteger, nullable=False),
            UniqueConstraint("StartTime", "FileName", name="UQ_AvailabilityFileCursor"),
        ),
    )


def in_window(table: Table, start: datetime, end: datetime, column: str = "StartTime"):
    return and_(table.c[column] >= start, table.c[column] < end)


def rows_in_window(table: Table, start: datetime, end: datetime, extra=None) -> Select:
    condition = in_window(table, start, end)
    if extra is not None:
        condition = and_(condition, extra)
    return select(table).where(condition)


def sums_by(table: Table, group: list, start: datetime, end: datetime) -> Select:
    """Exact sums of the additive columns over [start, end), grouped by ``group`` columns."""
    return (
        select(*group, *(func.sum(table.c[c]).label(c) for c in ADDITIVE))
        .where(in_window(table, start, end))
        .group_by(*group)
    )


def daily_from_minutes(t: AvailabilityTables, day: datetime, next_day: datetime) -> Select:
    """One row per key of the day: sums of its minute rows."""
    return sums_by(t.minute, [t.minute.c[k] for k in KEY_COLUMNS[1:]], day, next_day)


def published_sums(t: AvailabilityTables, level: int, start: datetime, end: datetime) -> Select:
    """Per known scenario (inner join with Scenario: unknown ones are not published)."""
    agg = t.aggregate(level)
    group = [agg.c.ScenarioId, t.scenario.c.ScenarioName]
    return (
        select(*group, *(func.sum(agg.c[c]).label(c) for c in ADDITIVE))
        .select_from(agg.join(t.scenario, agg.c.ScenarioId == t.scenario.c.ScenarioId))
        .where(in_window(agg, start, end))
        .group_by(*group)
    )


def translated_minutes(t: AvailabilityTables, start: datetime, end: datetime) -> Select:
    """Minute rows with ScenarioName and CustomerName (NULL when the id is unknown)."""
    m = t.minute
    return (
        select(m, t.scenario.c.ScenarioName, t.customer.c.CustomerName)
        .select_from(
            m.outerjoin(t.scenario, m.c.ScenarioId == t.scenario.c.ScenarioId).outerjoin(
                t.customer, m.c.PartnerId == t.customer.c.PartnerId
            )
        )
        .where(in_window(m, start, end))
    )


def unknown_counts(
    t: AvailabilityTables, level: int, start: datetime, end: datetime
) -> list[Select]:
    """(rows, requests) whose ScenarioId is not in Scenario, and whose PartnerId is not in
    Customer (an absent partner, '', is counted apart)."""
    agg = t.aggregate(level)
    scen = (
        select(func.count().label("rows"), func.sum(agg.c.TotalRequests).label("requests"))
        .select_from(agg.outerjoin(t.scenario, agg.c.ScenarioId == t.scenario.c.ScenarioId))
        .where(and_(in_window(agg, start, end), t.scenario.c.ScenarioId.is_(None)))
    )
    partner = (
        select(func.count().label("rows"), func.sum(agg.c.TotalRequests).label("requests"))
        .select_from(agg.outerjoin(t.customer, agg.c.PartnerId == t.customer.c.PartnerId))
        .where(
            and_(
                in_window(agg, start, end), t.customer.c.PartnerId.is_(None), agg.c.PartnerId != ""
            )
        )
    )
    return [scen, partner]


def distinct_unknown_scenarios(t: AvailabilityTables, start: datetime, end: datetime) -> Select:
    m = t.minute
    return (
        select(m.c.ScenarioId, func.sum(m.c.TotalRequests).label("requests"))
        .select_from(m.outerjoin(t.scenario, m.c.ScenarioId == t.scenario.c.ScenarioId))
        .where(and_(in_window(m, start, end), t.scenario.c.ScenarioId.is_(None)))
        .group_by(m.c.ScenarioId)
    )


def scenario_sums(t: AvailabilityTables, start: datetime, end: datetime) -> Select:
    """Per scenario over [start, end) from the minute rows (SLO windows)."""
    m = t.minute
    return (
        select(
            m.c.ScenarioId,
            func.sum(m.c.TotalRequests).label("TotalRequests"),
            func.sum(m.c.FailedRequests).label("FailedRequests"),
        )
        .where(in_window(m, start, end))
        .group_by(m.c.ScenarioId)
    )


def published_series(
    t: AvailabilityTables, level: int, start: datetime, end: datetime, scenario_ids=None
) -> Select:
    p = t.published
    condition = and_(p.c.TimeStampTypeId == level, in_window(p, start, end))
    if scenario_ids is not None:
        condition = and_(condition, p.c.ScenarioId.in_(list(scenario_ids)))
    return select(p).where(condition).order_by(p.c.StartTime, p.c.ScenarioId)


def daily_scenario_counts(t: AvailabilityTables, start: datetime, end: datetime) -> Select:
    """Per scenario and day: total and failed requests of the daily rows (SLO budget series)."""
    d = t.daily
    return (
        select(
            d.c.ScenarioId,
            d.c.StartTime,
            func.sum(d.c.TotalRequests).label("TotalRequests"),
            func.sum(d.c.FailedRequests).label("FailedRequests"),
        )
        .where(in_window(d, start, end))
        .group_by(d.c.ScenarioId, d.c.StartTime)
    )
