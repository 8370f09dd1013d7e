"""Demo data: a catalog and shards with realistic DataPump traffic.

Several billers over a few shards; per-hour volumes with a daily rhythm; lognormal latencies;
error bursts; timeouts (408/504/'Timeout' and slow calls); and some bad rows (NULL or junk status
codes, NULL or negative response times) so the rules are exercised.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import Index, MetaData, delete, insert

from metrics_pipeline.datapump.objectives import BillerObjective, validate
from metrics_pipeline.datapump.sql import (
    CatalogNames,
    ShardNames,
    catalog_table,
    detail_table,
    occupancy_table,
)
from metrics_pipeline.resources.engines import create_db_engine


@dataclass(frozen=True)
class DemoBiller:
    biller_id: int
    name: str
    shard: str
    enabled: bool
    calls_per_hour: float
    median_ms: float


DEMO_BILLERS = (
    DemoBiller(101, "Acme Water", "shard_east", True, 420, 95),
    DemoBiller(102, "Bright Power", "shard_east", True, 260, 140),
    DemoBiller(103, "City Gas", "shard_west", True, 610, 80),
    DemoBiller(104, "Delta Telecom", "shard_west", True, 150, 230),
    DemoBiller(105, "Evergreen Waste", "shard_north", True, 90, 120),
    DemoBiller(106, "Frontier Cable", "shard_north", False, 80, 110),
)

#: Objectives of the demo's billers (shares, not percent): Delta Telecom has none, Evergreen
#: Waste is often too quiet at night to page, bursts burn the others' budgets.
DEMO_OBJECTIVES: tuple[BillerObjective, ...] = (
    validate(101, error_rate=0.05, timeout_rate=0.01, p95_ms=600),
    validate(102, error_rate=0.03, timeout_rate=0.008, p95_ms=900),
    validate(103, error_rate=0.02, timeout_rate=0.006, p95_ms=400),
    validate(105, error_rate=0.05, timeout_rate=0.01, p95_ms=800),
)

STATUS_OK = np.array(["200", "200", "200", "200", "201", "204", "302"])
STATUS_ERR = np.array(["500", "502", "503", "404", "400", "401"])
STATUS_TIMEOUT = np.array(["504", "408", "Timeout", "TIMEOUT "])
STATUS_BAD = np.array(["", " 200 ", "abc", "2OO", "-1", "0200"], dtype=object)


def generate_biller_rows(
    biller: DemoBiller, start: datetime, hours: int, seed: int, scale: float = 1.0
) -> list[dict]:
    """Rows for one biller over ``hours`` hours from ``start`` (deterministic for a seed)."""
    rng = np.random.default_rng(seed * 1000 + biller.biller_id)
    rows: list[dict] = []
    for h in range(hours):
        hour = start + timedelta(hours=h)
        rhythm = 0.45 + 0.55 * np.sin(np.pi * ((hour.hour - 6) % 24) / 24) ** 2
        n = int(rng.poisson(biller.calls_per_hour * rhythm * scale))
        if n == 0:
            continue
        burst = rng.random() < 0.04
        latency = rng.lognormal(np.log(biller.median_ms * (2.5 if burst else 1)), 0.55, n)
        kind = rng.random(n)
        err_p = 0.22 if burst else 0.012
        status = np.where(kind < err_p, rng.choice(STATUS_ERR, n), rng.choice(STATUS_OK, n)).astype(
            object
        )
        timeouts = kind > 1 - (0.03 if burst else 0.003)
        status[timeouts] = rng.choice(STATUS_TIMEOUT, int(timeouts.sum()))
        latency[timeouts] = rng.uniform(5000, 60000, int(timeouts.sum()))
        slow_ok = (kind > 0.5) & (kind < 0.5008)  # slow successes: timeouts by duration alone
        latency[slow_ok] = rng.uniform(30000, 45000, int(slow_ok.sum()))
        bad = rng.random(n)
        status[bad < 0.002] = None
        junk = (bad >= 0.002) & (bad < 0.004)
        status[junk] = rng.choice(STATUS_BAD, int(junk.sum()))
        rt = np.round(latency, 2).astype(object)
        rt[(bad >= 0.004) & (bad < 0.0055)] = None
        rt[(bad >= 0.0055) & (bad < 0.006)] = -1.0
        seconds = np.sort(rng.integers(0, 3600 * 1000, n))
        for i in range(n):
            rows.append(
                {
                    "biller": biller.biller_id,
                    "created": hour + timedelta(milliseconds=int(seconds[i])),
                    "rt": None if rt[i] is None else float(rt[i]),
                    "status": status[i],
                }
            )
    return rows


def create_demo_data(
    catalog_url: str,
    shard_url_template: str,
    end: datetime,
    days: int = 14,
    seed: int = 7,
    scale: float = 1.0,
    billers: Sequence[DemoBiller] = DEMO_BILLERS,
    catalog_names: CatalogNames = CatalogNames(),
    shard_names: ShardNames = ShardNames(),
) -> dict[str, int]:
    """(Re)create the catalog and the shards' tables with ``days`` days of traffic before ``end``.

    Returns the number of rows written per shard. Existing demo tables are replaced.
    """
    start = end - timedelta(days=days)
    hours = days * 24
    catalog_engine = create_db_engine(catalog_url, "catalog", must_exist=False)
    md = MetaData()
    catalog = catalog_table(catalog_names, md)
    md.drop_all(catalog_engine)
    md.create_all(catalog_engine)
    with catalog_engine.begin() as conn:
        conn.execute(
            insert(catalog),
            [
                {
                    catalog_names.biller_id: b.biller_id,
                    catalog_names.biller_name: b.name,
                    catalog_names.shard_name: b.shard,
                    catalog_names.enabled: b.enabled,
                }
                for b in billers
            ],
        )
    catalog_engine.dispose()

    written: dict[str, int] = {}
    for shard in sorted({b.shard for b in billers}):
        engine = create_db_engine(
            shard_url_template.replace("{shard}", shard), f"shard {shard}", must_exist=False
        )
        smd = MetaData()
        detail = detail_table(shard_names, smd)
        occupancy = occupancy_table(shard_names, smd)
        Index(
            f"IX_{shard_names.detail_table}_Biller_Created",
            detail.c[shard_names.biller_id],
            detail.c[shard_names.created],
        )
        smd.drop_all(engine)
        smd.create_all(engine)
        written[shard] = 0
        with engine.begin() as conn:
            conn.execute(delete(occupancy))
            for b in (b for b in billers if b.shard == shard):
                conn.execute(
                    insert(occupancy),
                    {shard_names.occupancy_biller_id: b.biller_id, shard_names.processing: False},
                )
                rows = generate_biller_rows(b, start, hours, seed, scale)
                batch = [
                    {
                        shard_names.biller_id: r["biller"],
                        shard_names.created: r["created"],
                        shard_names.response_time: r["rt"],
                        shard_names.status_code: r["status"],
                    }
                    for r in rows
                ]
                for i in range(0, len(batch), 50_000):
                    conn.execute(insert(detail), batch[i : i + 50_000])
                written[shard] += len(batch)
        engine.dispose()
    return written
