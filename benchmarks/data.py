"""Fast synthetic shards for benchmarks: B billers x D days x R calls per hour.

Written with the drivers' bulk paths (sqlite3 executemany, PostgreSQL COPY) so that generating
millions of rows takes seconds. Tables and the (BillerId, CreatedDate) index are created with
the project's own table definitions, as a real shard would have them.
"""

import sqlite3
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import Index, MetaData, create_engine, insert
from sqlalchemy.engine import make_url

from metrics_pipeline.datapump.sql import (
    CatalogNames,
    ShardNames,
    catalog_table,
    detail_table,
    occupancy_table,
)
from metrics_pipeline.resources.engines import normalize_url

STATUSES = np.array(["200"] * 90 + ["201"] * 3 + ["302"] * 2 + ["500", "503", "404", "504", "408"])


def shard_of(biller: int, shards: int) -> str:
    return f"bench_{biller % shards:02d}"


def create_catalog(url: str, billers: int, shards: int) -> None:
    engine = create_engine(normalize_url(url, "catalog"))
    md = MetaData()
    t = catalog_table(CatalogNames(), md)
    md.drop_all(engine)
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            insert(t),
            [
                {
                    "BillerId": b,
                    "BillerName": f"Bench {b}",
                    "ShardName": shard_of(b, shards),
                    "IsDataPumpEnabled": True,
                }
                for b in range(1, billers + 1)
            ],
        )
    engine.dispose()


def _rows_for_day(rng, biller: int, day: datetime, per_hour: int):
    n = per_hour * 24
    offsets = np.sort(rng.integers(0, 86_400_000, n))
    created = [day + timedelta(milliseconds=int(ms)) for ms in offsets]
    rt = np.round(rng.lognormal(np.log(120), 0.6, n), 2)
    status = rng.choice(STATUSES, n)
    nulls = rng.random(n) < 0.002
    return [
        (
            biller,
            created[i].strftime("%Y-%m-%d %H:%M:%S.%f"),
            None if nulls[i] else float(rt[i]),
            str(status[i]),
        )
        for i in range(n)
    ]


def create_shards(
    template: str, billers: int, shards: int, days: int, per_hour: int, end: datetime, seed=1
) -> int:
    """(Re)create every shard and fill it; returns the number of rows written."""
    start = end - timedelta(days=days)
    total = 0
    for s in range(shards):
        name = f"bench_{s:02d}"
        url = template.replace("{shard}", name)
        engine = create_engine(normalize_url(url, "shard"))
        md = MetaData()
        detail = detail_table(ShardNames(), md)
        occ = occupancy_table(ShardNames(), md)
        Index("IX_DataPumpDetail_Biller_Created", detail.c.BillerId, detail.c.CreatedDate)
        md.drop_all(engine)
        md.create_all(engine)
        mine = [b for b in range(1, billers + 1) if shard_of(b, shards) == name]
        if not mine:
            engine.dispose()
            continue
        with engine.begin() as conn:
            conn.execute(insert(occ), [{"BillerId": b, "Processing": False} for b in mine])
        backend = make_url(url).get_backend_name()
        for b in mine:
            rng = np.random.default_rng(seed * 10_000 + b)
            for d in range(days):
                rows = _rows_for_day(rng, b, start + timedelta(days=d), per_hour)
                total += len(rows)
                if backend == "sqlite":
                    con = sqlite3.connect(make_url(url).database)
                    con.executemany(
                        'INSERT INTO "DataPumpDetail" ("BillerId", "CreatedDate", "ResponseTime", '
                        '"StatusCode") VALUES (?, ?, ?, ?)',
                        rows,
                    )
                    con.commit()
                    con.close()
                else:
                    raw = engine.raw_connection()
                    try:
                        with (
                            raw.cursor() as cur,
                            cur.copy(
                                'COPY "DataPumpDetail" ("BillerId", "CreatedDate", "ResponseTime", '
                                '"StatusCode") FROM STDIN'
                            ) as copy,
                        ):
                            for row in rows:
                                copy.write_row(row)
                        raw.commit()
                    finally:
                        raw.close()
        if backend == "postgresql":
            with engine.begin() as conn:
                conn.exec_driver_sql('ANALYZE "DataPumpDetail"')
        engine.dispose()
    return total
