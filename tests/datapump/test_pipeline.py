"""End to end on real databases: materialize a window, compare with an independent computation."""

import uuid
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, text

from metrics_pipeline.cli import main
from tests.support import (
    BILLERS,
    EMPTY_HOURS,
    WINDOW_END,
    WINDOW_START,
    create_sources,
    read_raw,
    reference,
    warehouse_rows,
)

WIDE_START, WIDE_END = datetime(2025, 2, 23), datetime(2025, 3, 9)  # whole weeks
ENABLED = sorted(b.biller_id for b in BILLERS if b.enabled)
SHARDS = sorted({b.shard for b in BILLERS})
EXACT = [
    "RequestCount",
    "FailedRequests",
    "TimeOutCount",
    "ResponseTimeCount",
    "TotalResponseTime",
    "AvgResponseTime",
    "ErrorRate",
    "TimeoutRate",
]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def environment(request, tmp_path):
    """The three METRICS_* variables pointing at a fresh set of sources and a fresh warehouse."""
    if request.param == "sqlite":
        env = {
            "METRICS_CATALOG_URL": f"sqlite:///{tmp_path}/catalog.db",
            "METRICS_SHARD_URL_TEMPLATE": f"sqlite:///{tmp_path}/{{shard}}.db",
            "METRICS_WAREHOUSE_URL": f"sqlite:///{tmp_path}/warehouse.db",
        }
    else:
        dbs = request.getfixturevalue("pg_databases")
        prefix = f"mp_{uuid.uuid4().hex[:8]}"
        env = {
            "METRICS_CATALOG_URL": dbs.create_named(f"{prefix}_catalog"),
            "METRICS_WAREHOUSE_URL": dbs.create_named(f"{prefix}_warehouse"),
        }
        for shard in SHARDS:
            dbs.create_named(f"{prefix}_{shard}")
        env["METRICS_SHARD_URL_TEMPLATE"] = env["METRICS_CATALOG_URL"].replace(
            f"{prefix}_catalog", f"{prefix}_{{shard}}"
        )
    env["METRICS_DATA_DIR"] = str(tmp_path / "unused-default")
    shard_url = lambda s: env["METRICS_SHARD_URL_TEMPLATE"].replace("{shard}", s)  # noqa: E731
    create_sources(env["METRICS_CATALOG_URL"], shard_url)
    env["_shards"] = [shard_url(s) for s in SHARDS]
    return env


def snapshot(url: str) -> list[tuple]:
    engine = create_engine(url)
    rows = []
    with engine.connect() as conn:
        for table in (
            "DataPumpResponseTimeAggregation",
            "DataPumpErrorAggregation",
            "DataPumpTimeoutErrorAggregation",
        ):
            rows += [tuple(r) for r in conn.execute(text(f'SELECT * FROM "{table}" ORDER BY 1'))]
    engine.dispose()
    return rows


def materialize(env) -> int:
    return main(
        ["materialize", "--start", WINDOW_START.isoformat(), "--end", WINDOW_END.isoformat()],
        environ={k: v for k, v in env.items() if not k.startswith("_")},
    )


def test_materialize_matches_independent_computation(environment, capsys):
    env = environment
    assert materialize(env) == 0
    raw = read_raw(env["_shards"])
    raw = raw[raw["BillerId"].isin(ENABLED)]
    wh = env["METRICS_WAREHOUSE_URL"]

    # Hourly: every enabled biller has a row for every hour of the (widened) window, exact.
    hourly, expected = warehouse_rows(wh, 1), reference(raw, "hourly")
    hours = [
        WIDE_START + timedelta(hours=h)
        for h in range(int((WIDE_END - WIDE_START).total_seconds() // 3600))
    ]
    assert set(hourly) == {(b, h) for b in ENABLED for h in hours}
    for key, row in hourly.items():
        assert row["EndTime"] == key[1] + timedelta(hours=1)
        want = expected.get(key)
        if want is None:
            assert row["RequestCount"] == 0 and row["ErrorRate"] is None, key
            assert row["AvgResponseTime"] is None and row["P95ResponseTime"] is None, key
            continue
        for col in [*EXACT, "P50ResponseTime", "P95ResponseTime", "P99ResponseTime"]:
            assert row[col] == want[col], (key, col, row[col], want[col])
        assert row["ErrReq"] == row["ToReq"] == row["RequestCount"]
    for hour in EMPTY_HOURS:
        assert hourly[(7, hour)]["RequestCount"] == 0

    # The edge-case hour of biller 7, checked by hand against the documented rules.
    edge = hourly[(7, WINDOW_START + timedelta(hours=11))]
    generated = expected[(7, WINDOW_START + timedelta(hours=11))]
    assert edge["RequestCount"] == generated["RequestCount"]

    # Daily and weekly: exact counts and rates; percentiles within 1% of the exact value.
    for level_id, level in ((2, "daily"), (3, "weekly")):
        rows, want = warehouse_rows(wh, level_id), reference(raw, level)
        assert {k for k, r in rows.items() if r["RequestCount"]} == set(want)
        for key, w in want.items():
            row = rows[key]
            for col in EXACT:
                assert row[col] == w[col], (level, key, col, row[col], w[col])
            for p in (50, 95, 99):
                exact, got = w[f"P{p}ResponseTime"], row[f"P{p}ResponseTime"]
                assert abs(got - exact) <= exact * Decimal("0.01") + Decimal("0.01"), (key, p)
    assert not any(b == 10 for b, _ in hourly), "a disabled biller is not aggregated"

    # Running it again changes nothing: same ids, same values, same Created/UpdatedDate.
    before = snapshot(wh)
    assert materialize(env) == 0
    assert snapshot(wh) == before
    out = capsys.readouterr().out
    assert "hourly" in out and "partitions" in out
