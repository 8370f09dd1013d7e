"""Fixtures: a warehouse (SQLite file or throwaway PostgreSQL database) with reference tables,
and an events root with hour folders of files."""

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from metrics_pipeline.availability import pipeline
from metrics_pipeline.availability.settings import AvailabilitySettings
from tests.availability import events as ev
from tests.availability import reference as ref

HOUR = datetime(2025, 3, 1, 22)
KNOWN = ["Checkout", "Search", "Login"]


def reference_rows(store) -> None:
    store.write_reference(
        [
            {"ScenarioId": s, "ScenarioName": f"{s} service", "AvailabilityTarget": 99.5}
            for s in KNOWN
        ],
        [{"PartnerId": p, "CustomerName": f"Customer {p}"} for p in ("P1", "P2", "C1")],
        sorted(ev.OMS),
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def env(request, tmp_path: Path) -> dict[str, str]:
    environ = {
        "METRICS_DATA_DIR": str(tmp_path / "data"),
        "METRICS_EVENTS_ROOT": str(tmp_path / "events"),
    }
    if request.param == "postgres":
        dbs = request.getfixturevalue("pg_databases")
        environ["METRICS_WAREHOUSE_URL"] = dbs.create("mp_avail")
    return environ


@pytest.fixture
def store(env):
    s = pipeline.open_store(env)
    reference_rows(s)
    yield s
    s.engine.dispose()


@pytest.fixture
def settings(env) -> AvailabilitySettings:
    return AvailabilitySettings.from_env(env)


def write_hours(root: Path) -> dict[datetime, list[dict]]:
    """Three hours over two days: JSON Lines + gzip, Parquet, and both mixed."""
    h0, h1, h2 = HOUR, HOUR + timedelta(hours=1), HOUR + timedelta(hours=2)
    written = {}
    f = ev.hour_folder(root, h0)
    a, b = ev.edge_cases(h0), ev.random_events(h0, 1500, 1)
    ev.write_jsonl(f / "a.jsonl", a)
    ev.write_jsonl(f / "b.jsonl.gz", b)
    written[h0] = ref.read_lines(f / "a.jsonl") + ref.read_lines(f / "b.jsonl.gz")
    f = ev.hour_folder(root, h1)
    c = ev.random_events(h1, 1200, 2)
    written[h1] = ref.read_parquet(ev.write_parquet(f / "c.parquet", c))
    f = ev.hour_folder(root, h2)
    d, e = (
        ev.random_events(h2, 900, 3),
        ev.random_events(h2, 700, 3),
    )  # same ids: duplicates across files
    ev.write_jsonl(f / "e.jsonl", e)
    written[h2] = ref.read_parquet(ev.write_parquet(f / "d.parquet", d)) + ref.read_lines(
        f / "e.jsonl"
    )
    return written


def expected_minutes(written: dict[datetime, list[dict]]) -> dict:
    out = {}
    for hour, events in written.items():
        out.update(
            ref.minute_table(
                ref.compute_hour([ref.flatten(e) for e in events], hour, ev.OMS)["rows"]
            )
        )
    return out


def table_rows(store, table, key, values) -> dict:
    return {tuple(r[k] for k in key): {v: r[v] for v in values} for r in store.read(select(table))}
