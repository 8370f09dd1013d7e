"""Test data with edge cases, and an independent reference computation written with pandas.

The reference shares no code with metrics_pipeline's rules or SQL: it reads the raw rows with a
plain SELECT and applies the documented semantics with pandas and Decimal.
"""

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pandas as pd
from sqlalchemy import MetaData, create_engine, insert, text

from metrics_pipeline.datapump.sql import (
    CatalogNames,
    ShardNames,
    catalog_table,
    detail_table,
    occupancy_table,
)

PG_ADMIN_URL = os.environ.get(
    "METRICS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def pg_available() -> bool:
    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


#: Saturday 2025-03-01 .. Tuesday 2025-03-04: crosses a Sunday week boundary; the CLI widens it
#: to whole weeks (2025-02-23 .. 2025-03-09).
WINDOW_START = datetime(2025, 3, 1)
WINDOW_END = datetime(2025, 3, 4)


@dataclass(frozen=True)
class TestBiller:
    biller_id: int
    shard: str
    enabled: bool = True


BILLERS = (
    TestBiller(7, "alpha"),
    TestBiller(8, "alpha"),
    TestBiller(9, "beta"),
    TestBiller(10, "beta", enabled=False),
)

EDGE_ROWS = [
    # (offset from WINDOW_START, status, response time)
    (timedelta(hours=10), "200", 100.0),  # exactly on an hour boundary
    (timedelta(hours=10, minutes=59, seconds=59, microseconds=997000), "200", 300.0),
    (timedelta(hours=11), None, 50.0),
    (timedelta(hours=11, minutes=1), "", 60.0),
    (timedelta(hours=11, minutes=2), " 200 ", 70.0),
    (timedelta(hours=11, minutes=3), "Timeout", 5000.0),
    (timedelta(hours=11, minutes=4), "504", None),
    (timedelta(hours=11, minutes=5), "0408", 10.0),
    (timedelta(hours=11, minutes=6), "abc", 10.0),
    (timedelta(hours=11, minutes=7), "200", -1.0),
    (timedelta(hours=11, minutes=8), "200", 0.0),
    (timedelta(hours=11, minutes=9), "200", 30000.0),
    (timedelta(hours=11, minutes=10), "200", 29999.99),
    (timedelta(hours=11, minutes=11), "302", 12.35),
    (timedelta(hours=11, minutes=12), "404", 12.34),
    (timedelta(hours=11, minutes=13), "TIMEOUT", 1.0),
    (timedelta(hours=11, minutes=14), "5OO", 1.0),
    # Saturday 23:59:59 and Sunday 00:00:00: different days and different weeks
    (timedelta(days=1, hours=23, minutes=59, seconds=59), "500", 200.0),
    (timedelta(days=2), "200", 200.0),
]

#: Hours in which biller 7 has no calls at all (they must still get a row).
EMPTY_HOURS = {WINDOW_START + timedelta(hours=h) for h in (30, 31, 50)}


def generate_rows(biller_id: int, seed: int, per_hour: int = 25) -> list[tuple]:
    rng = np.random.default_rng(seed * 100 + biller_id)
    statuses = np.array(["200", "200", "200", "201", "302", "500", "503", "404", "504", "408"])
    rows = []
    hours = int((WINDOW_END - WINDOW_START) / timedelta(hours=1))
    for h in range(hours):
        hour = WINDOW_START + timedelta(hours=h)
        if biller_id == 7 and hour in EMPTY_HOURS:
            continue
        n = int(rng.integers(0, per_hour * 2))
        ms = rng.integers(0, 3_600_000, n)
        rts = np.round(rng.lognormal(np.log(150), 0.7, n), 2)
        codes = rng.choice(statuses, n, p=[0.5, 0.2, 0.1, 0.05, 0.05, 0.03, 0.02, 0.02, 0.02, 0.01])
        for i in range(n):
            rows.append(
                (biller_id, hour + timedelta(milliseconds=int(ms[i])), float(rts[i]), str(codes[i]))
            )
    if biller_id == 7:
        rows += [(7, WINDOW_START + off, rt, st) for off, st, rt in EDGE_ROWS]
    return rows


def create_sources(catalog_url: str, shard_url_for, seed: int = 1, per_hour: int = 25) -> None:
    """Catalog and shards (tables as the source contract says) with generated and edge rows."""
    cn, sn = CatalogNames(), ShardNames()
    engine = create_engine(catalog_url)
    md = MetaData()
    cat = catalog_table(cn, md)
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            insert(cat),
            [
                {
                    cn.biller_id: b.biller_id,
                    cn.biller_name: f"Biller {b.biller_id}",
                    cn.shard_name: b.shard,
                    cn.enabled: b.enabled,
                }
                for b in BILLERS
            ],
        )
    engine.dispose()
    for shard in sorted({b.shard for b in BILLERS}):
        engine = create_engine(shard_url_for(shard))
        md = MetaData()
        detail, occ = detail_table(sn, md), occupancy_table(sn, md)
        md.create_all(engine)
        with engine.begin() as conn:
            for b in (b for b in BILLERS if b.shard == shard):
                conn.execute(
                    insert(occ), {sn.occupancy_biller_id: b.biller_id, sn.processing: False}
                )
                rows = generate_rows(b.biller_id, seed, per_hour)
                conn.execute(
                    insert(detail),
                    [
                        {
                            sn.biller_id: r[0],
                            sn.created: r[1],
                            sn.response_time: r[2],
                            sn.status_code: r[3],
                        }
                        for r in rows
                    ],
                )
        engine.dispose()


def read_raw(shard_urls: list[str]) -> pd.DataFrame:
    frames = []
    for url in shard_urls:
        engine = create_engine(url)
        with engine.connect() as conn:
            frames.append(
                pd.read_sql(
                    text(
                        'SELECT "BillerId", "CreatedDate", "ResponseTime", "StatusCode" '
                        'FROM "DataPumpDetail"'
                    ),
                    conn,
                )
            )
        engine.dispose()
    df = pd.concat(frames, ignore_index=True)
    df["CreatedDate"] = pd.to_datetime(df["CreatedDate"], format="mixed")
    df["ResponseTime"] = pd.to_numeric(df["ResponseTime"]).astype(float)
    return df


def _round2(x) -> Decimal | None:
    if x is None:
        return None
    return Decimal(repr(float(x)) if not isinstance(x, Decimal) else x).quantize(
        Decimal("0.01"), rounding=ROUND_HALF_UP
    )


def classify(df: pd.DataFrame) -> pd.DataFrame:
    s = df["StatusCode"].astype("string").str.strip(" ")
    digits = s.str.fullmatch(r"[0-9]+").fillna(False).astype(bool)
    code = pd.to_numeric(s.where(digits), errors="coerce")
    rt = df["ResponseTime"]
    timeout = (
        code.isin([408, 504])
        | s.str.lower().eq("timeout").fillna(False).astype(bool)
        | (rt >= 30000)
    )
    success = digits & code.between(200, 399)
    out = df.copy()
    out["timeout"] = timeout.astype(bool)
    out["failed"] = (timeout | ~success).astype(bool)
    out["valid"] = rt.notna() & (rt >= 0)
    return out


def floor_to(level: str, ts: pd.Series) -> pd.Series:
    if level == "hourly":
        return ts.dt.floor("h")
    days = ts.dt.floor("D")
    if level == "daily":
        return days
    return days - pd.to_timedelta((days.dt.weekday + 1) % 7, unit="D")  # back to Sunday


def reference(df: pd.DataFrame, level: str) -> dict[tuple[int, datetime], dict]:
    """Expected figures per (biller, window start) for windows that have rows."""
    c = classify(df)
    c["start"] = floor_to(level, c["CreatedDate"])
    out = {}
    for (biller, start), g in c.groupby(["BillerId", "start"]):
        valid = np.sort(g.loc[g["valid"], "ResponseTime"].to_numpy())
        n, failed, timeouts = len(g), int(g["failed"].sum()), int(g["timeout"].sum())
        total = sum((Decimal(repr(float(v))).quantize(Decimal("0.01")) for v in valid), Decimal(0))
        rank = lambda p, n=len(valid): -(-p * n // 100)  # noqa: E731 - ceil(p * n / 100)
        out[(int(biller), start.to_pydatetime())] = {
            "RequestCount": n,
            "FailedRequests": failed,
            "TimeOutCount": timeouts,
            "ResponseTimeCount": len(valid),
            "TotalResponseTime": total,
            "AvgResponseTime": _round2(total / len(valid)) if len(valid) else None,
            "ErrorRate": _round2(Decimal(100 * failed) / n),
            "TimeoutRate": _round2(Decimal(100 * timeouts) / n),
            **{
                f"P{p}ResponseTime": (_round2(valid[rank(p) - 1]) if len(valid) else None)
                for p in (50, 95, 99)
            },
        }
    return out


def warehouse_rows(warehouse_url: str, level_id: int) -> dict[tuple[int, datetime], dict]:
    """The three tables' rows of one level joined by key, as plain Python values."""
    engine = create_engine(warehouse_url)
    q = text(
        'SELECT r."BillerId", r."StartTime", r."EndTime", r."RequestCount", r."ResponseTimeCount", '
        'r."TotalResponseTime", r."AvgResponseTime", r."P50ResponseTime", r."P95ResponseTime", '
        'r."P99ResponseTime", e."FailedRequests", e."ErrorRate", t."TimeOutCount", t."TimeoutRate", '
        'e."RequestCount" AS "ErrReq", t."RequestCount" AS "ToReq" '
        'FROM "DataPumpResponseTimeAggregation" r '
        'JOIN "DataPumpErrorAggregation" e ON e."BillerId" = r."BillerId" '
        'AND e."TimeStampTypeId" = r."TimeStampTypeId" AND e."StartTime" = r."StartTime" '
        'JOIN "DataPumpTimeoutErrorAggregation" t ON t."BillerId" = r."BillerId" '
        'AND t."TimeStampTypeId" = r."TimeStampTypeId" AND t."StartTime" = r."StartTime" '
        'WHERE r."TimeStampTypeId" = :level'
    )
    with engine.connect() as conn:
        rows = conn.execute(q, {"level": level_id}).mappings().all()
    engine.dispose()
    out = {}
    for r in rows:
        row = {
            k: (_round2(v) if k in DECIMAL_COLUMNS and v is not None else v) for k, v in r.items()
        }
        for k in ("StartTime", "EndTime"):  # SQLite returns text from a raw SELECT
            if isinstance(row[k], str):
                row[k] = datetime.fromisoformat(row[k])
        out[(int(r["BillerId"]), row["StartTime"])] = row
    return out


DECIMAL_COLUMNS = {
    "TotalResponseTime",
    "AvgResponseTime",
    "P50ResponseTime",
    "P95ResponseTime",
    "P99ResponseTime",
    "ErrorRate",
    "TimeoutRate",
}


def sqlite_environment(folder, per_hour: int = 3) -> dict[str, str]:
    """The METRICS_* variables for SQLite sources with test data, and a warehouse, in ``folder``."""
    env = {
        "METRICS_CATALOG_URL": f"sqlite:///{folder}/catalog.db",
        "METRICS_SHARD_URL_TEMPLATE": f"sqlite:///{folder}/{{shard}}.db",
        "METRICS_WAREHOUSE_URL": f"sqlite:///{folder}/warehouse.db",
        "METRICS_DATA_DIR": str(folder / "data"),
    }
    create_sources(
        env["METRICS_CATALOG_URL"],
        lambda s: env["METRICS_SHARD_URL_TEMPLATE"].replace("{shard}", s),
        per_hour=per_hour,
    )
    return env


def register_billers(folder, count: int, shards: int = 1) -> dict[str, str]:
    """A SQLite catalog with ``count`` enabled billers (no calls) and its environment."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        "METRICS_CATALOG_URL": f"sqlite:///{folder}/catalog.db",
        "METRICS_SHARD_URL_TEMPLATE": f"sqlite:///{folder}/{{shard}}.db",
        "METRICS_WAREHOUSE_URL": f"sqlite:///{folder}/warehouse.db",
        "METRICS_DATA_DIR": str(folder / "data"),
    }
    cn = CatalogNames()
    engine = create_engine(env["METRICS_CATALOG_URL"])
    md = MetaData()
    cat = catalog_table(cn, md)
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            insert(cat),
            [
                {
                    cn.biller_id: 1000 + i,
                    cn.biller_name: f"Biller {1000 + i}",
                    cn.shard_name: f"s{i % shards}",
                    cn.enabled: True,
                }
                for i in range(count)
            ],
        )
    engine.dispose()
    return env
