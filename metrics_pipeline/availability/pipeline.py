"""The family's work as plain functions: an hour (files -> minute rows), a day (minutes -> daily
rows -> published rows), a window, and one change-driven refresh. Dagster assets and the CLI call
these; nothing here knows Dagster."""

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from metrics_pipeline.availability import cursor, duckdb_sql, rules, sql
from metrics_pipeline.availability.settings import AvailabilitySettings
from metrics_pipeline.availability.writer import Store
from metrics_pipeline.clock import as_naive_utc
from metrics_pipeline.semantics import Sketch
from metrics_pipeline.writes import WriteCounts


@dataclass
class HourReport:
    hour: datetime
    files: int
    events_read: int
    duplicates: int
    kept: int
    dropped: dict[str, int]
    scenario_levels: dict[str, int]
    partner_levels: dict[str, int]
    writes: WriteCounts


@dataclass
class WindowReport:
    hours: list[HourReport] = field(default_factory=list)
    days: list[datetime] = field(default_factory=list)
    minute_writes: WriteCounts = field(default_factory=WriteCounts)
    daily_writes: WriteCounts = field(default_factory=WriteCounts)
    published_writes: WriteCounts = field(default_factory=WriteCounts)

    def summary(self) -> str:
        events = sum(h.events_read for h in self.hours)
        kept = sum(h.kept for h in self.hours)
        return (
            f"availability: {len(self.hours)} hours ({events} events read, {kept} kept), "
            f"{len(self.days)} days; minute rows {self.minute_writes.as_dict()}, daily rows "
            f"{self.daily_writes.as_dict()}, published rows {self.published_writes.as_dict()}"
        )


def open_store(environ: Mapping[str, str] | None = None) -> Store:
    """The warehouse of METRICS_WAREHOUSE_URL (or the embedded default), schema ensured."""
    from metrics_pipeline.resources import resource_urls
    from metrics_pipeline.resources.engines import create_db_engine

    url = resource_urls(environ, resolve=True)["warehouse"]
    store = Store(create_db_engine(url, "warehouse", must_exist=False))
    store.ensure_schema()
    return store


def _duckdb(settings: AvailabilitySettings):
    temp = os.path.join(tempfile.gettempdir(), f"metrics-duckdb-{os.getpid()}")
    return duckdb_sql.connect(settings.duckdb_memory_limit, temp)


def materialize_hour(store: Store, settings: AvailabilitySettings, hour: datetime) -> HourReport:
    """Aggregate one hour folder and replace the hour's rows; the files seen go in the cursor in
    the same transaction. The listing comes before the read, so a file that changes meanwhile
    differs from the cursor at the next refresh."""
    files = cursor.list_files(settings.events_root, hour)
    folder = cursor.hour_folder(settings.events_root, hour)
    conn = _duckdb(settings)
    try:
        agg = duckdb_sql.aggregate_hour(
            conn, [folder / name for name in sorted(files)], hour, store.oms_operations()
        )
    finally:
        conn.close()
    ingest = {
        "Files": len(files),
        "EventsRead": agg.events_read,
        "Duplicates": agg.duplicates,
        "Kept": agg.kept,
        "dropped": agg.dropped,
        "scenario_levels": agg.scenario_levels,
        "partner_levels": agg.partner_levels,
    }
    writes = store.write_hour(
        hour,
        list(agg.minutes.values()),
        {s: sk.encode() for s, sk in agg.sketches.items()},
        ingest,
        files,
    )
    return HourReport(
        hour,
        len(files),
        agg.events_read,
        agg.duplicates,
        agg.kept,
        agg.dropped,
        agg.scenario_levels,
        agg.partner_levels,
        writes,
    )


def _finish(row: dict) -> dict:
    """A row of summed additive columns, with its derived columns."""
    counts = {c: int(row[c] or 0) for c in ("TotalRequests", "SuccessfulRequests", "LatencyCount")}
    latency = Decimal(str(row["TotalLatency"] or 0))
    return duckdb_sql.finish_counts({**row, **counts, "TotalLatency": latency})


def materialize_day(store: Store, day: datetime) -> WriteCounts:
    """AvailabilityDaily rows of ``day``: exact sums of its minute rows."""
    t = store.tables
    end = day + sql.ONE_DAY
    rows = [
        _finish({**r, "StartTime": day}) for r in store.read(sql.daily_from_minutes(t, day, end))
    ]
    return store.write_rows(t.daily, sql.KEY_COLUMNS, sql.VALUE_COLUMNS, day, end, rows)


def _published_row(r: dict, level: int, start: datetime, sketch: Sketch | None) -> dict:
    total, ok = int(r["TotalRequests"] or 0), int(r["SuccessfulRequests"] or 0)
    return {
        "ScenarioId": r["ScenarioId"],
        "ScenarioName": r["ScenarioName"],
        "TimeStampTypeId": level,
        "StartTime": start,
        "TotalRequests": total,
        "SuccessfulRequests": ok,
        "FailedRequests": total - ok,
        "Availability": rules.availability(ok, total),
        "AverageLatency": rules.average_latency(r["TotalLatency"], int(r["LatencyCount"] or 0)),
        "P95Latency": sketch.quantile(95) if sketch else None,
        "P99Latency": sketch.quantile(99) if sketch else None,
    }


def publish_day(store: Store, day: datetime) -> WriteCounts:
    """AvailabilityPublished rows of ``day``: its 24 hourly rows and its daily row, per known
    scenario (all partners, request types and environments together)."""
    t = store.tables
    end = day + sql.ONE_DAY
    hourly: dict[tuple[str, datetime], Sketch] = {}
    daily: dict[str, Sketch] = {}
    for r in store.read(sql.rows_in_window(t.sketch, day, end)):
        sketch = Sketch.decode(r["Sketch"])
        hourly[(r["ScenarioId"], as_naive_utc(r["StartTime"]))] = sketch
        daily.setdefault(r["ScenarioId"], Sketch()).merge(sketch)
    rows = []
    for hour in cursor.hours(day, end):
        for r in store.read(sql.published_sums(t, sql.HOURLY, hour, hour + sql.ONE_HOUR)):
            rows.append(_published_row(r, sql.HOURLY, hour, hourly.get((r["ScenarioId"], hour))))
    for r in store.read(sql.published_sums(t, sql.DAILY, day, end)):
        rows.append(_published_row(r, sql.DAILY, day, daily.get(r["ScenarioId"])))
    return store.write_rows(t.published, sql.PUBLISHED_KEY, sql.PUBLISHED_VALUES, day, end, rows)


def day_of(hour: datetime) -> datetime:
    return hour.replace(hour=0, minute=0, second=0, microsecond=0)


def _run_hours(store: Store, settings: AvailabilitySettings, hours: list[datetime]) -> WindowReport:
    report = WindowReport()
    for hour in hours:
        h = materialize_hour(store, settings, hour)
        report.hours.append(h)
        report.minute_writes.add(h.writes)
    report.days = sorted({day_of(h) for h in hours})
    for day in report.days:
        report.daily_writes.add(materialize_day(store, day))
        report.published_writes.add(publish_day(store, day))
    return report


def compute_window(
    start: datetime,
    end: datetime,
    environ: Mapping[str, str] | None = None,
    *,
    store: Store | None = None,
    settings: AvailabilitySettings | None = None,
) -> WindowReport:
    """Minute -> daily -> published for every hour in [start, end) (naive UTC or aware), and the
    days those hours touch. Re-running it on the same files changes nothing."""
    store = store or open_store(environ)
    settings = settings or AvailabilitySettings.from_env(environ)
    start, end = as_naive_utc(start), as_naive_utc(end)
    return _run_hours(store, settings, list(cursor.hours(start, end)))


def refresh_once(
    environ: Mapping[str, str] | None = None,
    *,
    now: datetime | None = None,
    store: Store | None = None,
    settings: AvailabilitySettings | None = None,
) -> WindowReport:
    """One change-driven cycle: hours of the look-back whose files differ from the cursor are
    aggregated again, with their days and published rows; nothing else is touched."""
    store = store or open_store(environ)
    settings = settings or AvailabilitySettings.from_env(environ)
    now = as_naive_utc(now or datetime.now(UTC))
    return _run_hours(store, settings, plan_refresh(store, settings, now))


def plan_refresh(store: Store, settings: AvailabilitySettings, now: datetime) -> list[datetime]:
    """The hours a refresh would aggregate (the cursor diff over the look-back)."""
    start, end = cursor.lookback_window(now, settings.lookback_days)
    listed = {h: cursor.list_files(settings.events_root, h) for h in cursor.hours(start, end)}
    listed = {h: f for h, f in listed.items() if f}
    return cursor.changed_hours(listed, store.cursor(start, end))


def slo_counts(store: Store, now: datetime) -> dict[str, dict]:
    """{ScenarioId: {window: (total, failed)}} for every SLO window ending at ``now``."""
    from metrics_pipeline.slo import WINDOWS

    out: dict[str, dict] = {}
    for window in WINDOWS:
        for r in store.read(sql.scenario_sums(store.tables, now - window, now)):
            counts = (int(r["TotalRequests"] or 0), int(r["FailedRequests"] or 0))
            out.setdefault(r["ScenarioId"], {})[window] = counts
    return out


def slo_states(store: Store, now: datetime, min_requests: int) -> dict[str, dict]:
    """SLO state of every scenario of the Scenario table at ``now``."""
    from metrics_pipeline.availability.slo import scenario_state

    counts = slo_counts(store, now)
    return {
        sid: {
            "scenarioName": s["ScenarioName"],
            **scenario_state(float(s["AvailabilityTarget"]), counts.get(sid, {}), min_requests),
        }
        for sid, s in sorted(store.scenarios().items())
    }
