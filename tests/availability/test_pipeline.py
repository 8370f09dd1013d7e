"""compute_window and refresh_once on real files and a real warehouse (SQLite and
PostgreSQL): every table equals the independent reference, re-runs change nothing, late files are
counted by the next refresh, and two concurrent writers of one hour leave one correct copy."""

import threading
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from metrics_pipeline.availability import duckdb_sql, pipeline, sql
from metrics_pipeline.availability.duckdb_sql import EventFilesUnreadable
from tests.availability import events as ev
from tests.availability import reference as ref
from tests.availability.conftest import HOUR, KNOWN, expected_minutes, table_rows, write_hours

VALUES = [
    "TotalRequests",
    "SuccessfulRequests",
    "FailedRequests",
    "LatencyCount",
    "TotalLatency",
    "AverageLatency",
]
WINDOW = (HOUR, HOUR + timedelta(hours=3))


def _naive(key):
    return tuple(k.replace(tzinfo=None) if isinstance(k, datetime) else k for k in key)


def minutes(store):
    rows = table_rows(store, store.tables.minute, sql.KEY_COLUMNS, VALUES)
    return {
        _naive(k): {c: (Decimal(str(v)) if c == "TotalLatency" else v) for c, v in r.items()}
        for k, r in rows.items()
    }


@pytest.mark.parametrize("kind", ["jsonl", "jsonl.gz", "parquet", "mixed"])
def test_duckdb_hour_equals_reference(tmp_path, kind):
    hour = HOUR
    folder = ev.hour_folder(tmp_path, hour)
    events = ev.random_events(hour, 2500, 11)
    if kind == "parquet":
        files = [ev.write_parquet(folder / "x.parquet", events)]
        records = events
    elif kind == "mixed":
        files = [
            ev.write_parquet(folder / "x.parquet", events[:1000]),
            ev.write_jsonl(folder / "y.jsonl.gz", events[800:] + ev.edge_cases(hour)),
        ]
        records = ref.read_parquet(files[0]) + ref.read_lines(files[1])
    else:
        files = [ev.write_jsonl(folder / f"x.{kind}", events + ev.edge_cases(hour))]
        records = ref.read_lines(files[0])
    got = duckdb_sql.aggregate_hour(duckdb_sql.connect(), files, hour, sorted(ev.OMS))
    want = ref.compute_hour([ref.flatten(e) for e in records], hour, ev.OMS)
    assert {k: {c: r[c] for c in VALUES} for k, r in got.minutes.items()} == ref.minute_table(
        want["rows"]
    )
    assert got.duplicates == want["duplicates"] > 0
    assert {k: v for k, v in got.dropped.items() if v} == want["dropped"]
    assert got.events_read == len(records)
    for scenario, latencies in want["latencies"].items():
        exact = ref.nearest_rank(latencies, 95)
        approx = got.sketches[scenario].quantile(95)
        assert abs(approx - exact) <= exact * Decimal("0.006") + Decimal("0.01")


def test_tables_equal_the_reference(store, settings):
    written = write_hours(settings.events_root)
    report = pipeline.compute_window(*WINDOW, store=store, settings=settings)
    assert [h.hour for h in report.hours] == [HOUR + timedelta(hours=i) for i in range(3)]
    assert report.days == [datetime(2025, 3, 1), datetime(2025, 3, 2)]
    want = expected_minutes(written)
    assert minutes(store) == want
    daily = table_rows(store, store.tables.daily, sql.KEY_COLUMNS, VALUES)
    got_daily = {
        _naive(k): {c: (Decimal(str(v)) if c == "TotalLatency" else v) for c, v in r.items()}
        for k, r in daily.items()
    }
    assert got_daily == ref.daily_table(want)
    pub_values = [
        "TotalRequests",
        "SuccessfulRequests",
        "FailedRequests",
        "Availability",
        "AverageLatency",
    ]
    for level in (1, 2):
        got = {
            (r["ScenarioId"], r["StartTime"].replace(tzinfo=None)): {c: r[c] for c in pub_values}
            for r in store.read(
                select(store.tables.published).where(
                    store.tables.published.c.TimeStampTypeId == level
                )
            )
        }
        assert got == ref.published(want, set(KNOWN), level)
        assert got, "published rows exist"
    names = {r["ScenarioName"] for r in store.read(select(store.tables.published))}
    assert names == {f"{s} service" for s in KNOWN}
    unknown = store.read(sql.distinct_unknown_scenarios(store.tables, *WINDOW))
    assert {r["ScenarioId"] for r in unknown} >= {"Ghost", "GetQuote", "PlaceOrder", "Unknown-Scn"}


def test_a_rerun_changes_nothing(store, settings):
    write_hours(settings.events_root)
    pipeline.compute_window(*WINDOW, store=store, settings=settings)
    before = {
        t.name: store.read(select(t).order_by(*t.primary_key.columns))
        for t in (store.tables.minute, store.tables.daily, store.tables.published)
    }
    again = pipeline.compute_window(*WINDOW, store=store, settings=settings)
    for writes in (again.minute_writes, again.daily_writes, again.published_writes):
        assert writes.inserted == writes.updated == writes.deleted == 0
        assert writes.unchanged > 0
    after = {
        t.name: store.read(select(t).order_by(*t.primary_key.columns))
        for t in (store.tables.minute, store.tables.daily, store.tables.published)
    }
    assert after == before
    assert pipeline.refresh_once(now=WINDOW[1], store=store, settings=settings).hours == []


def test_a_late_file_is_counted_by_the_next_refresh(store, settings):
    written = write_hours(settings.events_root)
    pipeline.compute_window(*WINDOW, store=store, settings=settings)
    published_before = {
        (r["ScenarioId"], r["TimeStampTypeId"], r["StartTime"]): r
        for r in store.read(select(store.tables.published))
    }
    late_hour = HOUR + timedelta(hours=1)
    late = ev.random_events(late_hour, 300, 99)
    ev.write_jsonl(ev.hour_folder(settings.events_root, late_hour) / "late.jsonl", late)
    written[late_hour] = written[late_hour] + ref.read_lines(
        ev.hour_folder(settings.events_root, late_hour) / "late.jsonl"
    )

    report = pipeline.refresh_once(now=WINDOW[1], store=store, settings=settings)
    assert [h.hour for h in report.hours] == [late_hour]
    assert report.days == [datetime(2025, 3, 1)]
    assert minutes(store) == expected_minutes(written)
    after = {
        (r["ScenarioId"], r["TimeStampTypeId"], r["StartTime"]): r
        for r in store.read(select(store.tables.published))
    }
    changed = {k for k in after if after[k] != published_before.get(k)}
    assert changed, "the late hour's published rows changed"
    assert {(k[1], k[2].replace(tzinfo=None)) for k in changed} <= {
        (1, late_hour),
        (2, datetime(2025, 3, 1)),
    }
    assert pipeline.refresh_once(now=WINDOW[1], store=store, settings=settings).hours == []


def test_refresh_looks_back_only_as_far_as_configured(store, settings):
    write_hours(settings.events_root)
    far = WINDOW[1] + timedelta(days=settings.lookback_days, hours=2)
    assert pipeline.plan_refresh(store, settings, far) == []
    assert pipeline.plan_refresh(store, settings, WINDOW[1]) == [
        HOUR + timedelta(hours=i) for i in range(3)
    ]


def test_a_removed_file_removes_its_rows(store, settings):
    write_hours(settings.events_root)
    pipeline.compute_window(*WINDOW, store=store, settings=settings)
    (ev.hour_folder(settings.events_root, HOUR + timedelta(hours=1)) / "c.parquet").unlink()
    report = pipeline.refresh_once(now=WINDOW[1], store=store, settings=settings)
    assert [h.hour for h in report.hours] == [HOUR + timedelta(hours=1)]
    assert report.minute_writes.deleted > 0
    m = store.tables.minute
    hour = HOUR + timedelta(hours=1)
    assert store.read(
        select(func.count()).select_from(m).where(sql.in_window(m, hour, hour + timedelta(hours=1)))
    )[0] == {"count_1": 0}


@pytest.mark.postgres
def test_two_concurrent_writers_of_one_hour(pg_databases, tmp_path):
    environ = {
        "METRICS_EVENTS_ROOT": str(tmp_path / "events"),
        "METRICS_WAREHOUSE_URL": pg_databases.create("mp_avail"),
    }
    written = write_hours(tmp_path / "events")
    from metrics_pipeline.availability.settings import AvailabilitySettings
    from tests.availability.conftest import reference_rows

    reference_rows(pipeline.open_store(environ))
    settings = AvailabilitySettings.from_env(environ)
    stores = [pipeline.open_store(environ) for _ in range(4)]
    errors, barrier = [], threading.Barrier(len(stores))

    def write(store):
        try:
            barrier.wait()
            pipeline.materialize_hour(store, settings, HOUR)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    want = expected_minutes({HOUR: written[HOUR]})
    assert minutes(stores[0]) == want
    m = stores[0].tables.minute
    assert stores[0].read(select(func.count()).select_from(m))[0]["count_1"] == len(want)


def test_an_unreadable_file_fails_the_hour_with_one_line(store, settings):
    folder = ev.hour_folder(settings.events_root, HOUR)
    (folder / "bad.jsonl").write_text('{"time": "2025-03-01T22:00:00Z"}\n{not json\n')
    with pytest.raises(EventFilesUnreadable) as info:
        pipeline.materialize_hour(store, settings, HOUR)
    assert "\n" not in str(info.value) and "2025-03-01 22:00" in str(info.value)
