"""Benchmarks of the collected-metrics family (loopback only, bounded in count and time).

1. Collector + consumer throughput: wrk POSTs batches of 100 data points (100 items of one key,
   no client ids, so every point is a new row) to ``metrics-pipeline collector`` while
   ``metrics-pipeline consumer`` writes them into a PostgreSQL warehouse; reported: points
   accepted per second, and end to end (until the last point is in CollectedMetric).
2. The single-point GET path (``/collect?app=..&data=..``) at 32 connections: req/s and p99
   (consumer stopped: the bus buffers).
3. Hourly statistics of 10M raw points (100 keys x 48 hours) through the asset's statements and
   through ``materialize_collected`` (Dagster, the user's path), beside PostgreSQL's own
   GROUP BY with ``percentile_cont(0.5) WITHIN GROUP`` computing the same figures.

    python -m benchmarks.collected [--duration 10] [--points 10000000]

Needs wrk (./scripts/system-deps.sh wrk), the local PostgreSQL and NATS servers.
"""

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
from sqlalchemy import create_engine, func, select, text

from benchmarks.api_load import _cpu_model, parse_wrk, wait_until_idle
from metrics_pipeline.collected.runs import materialize_collected
from metrics_pipeline.collected.settings import CollectedSettings
from metrics_pipeline.collected.store import CollectedStore
from metrics_pipeline.resources.engines import create_db_engine
from tests.collected.conftest import delete_stream
from tests.collected.processes import CollectorProcess, family_env, start_consumer
from tests.support import PG_ADMIN_URL

POST_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '%s'
"""
HOUR = timedelta(hours=1)


def wrk(url: str, connections: int, duration: int, script: Path | None, path: str = "") -> dict:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if script:
        command += ["-s", str(script)]
    command.append(url + path)
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result = parse_wrk(output)
    result["requests"] = int(re.search(r"(\d+) requests in", output).group(1))
    result["command"] = " ".join(command)
    return result


def count_rows(store: CollectedStore) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(store.t.raw)).scalar_one()


def throughput(settings, url: str, store, tmp: Path, duration: int, batch: int) -> dict:
    env = family_env(settings, url, METRICS_CONSUMER_BATCH="200")
    collector = CollectorProcess(env, tmp / "collector.log").wait_ready()
    consumer = start_consumer(env, tmp / "consumer.log", "--metrics-port", "0")
    body = json.dumps([{"app": "bench", "metrics": {"rt": 1.5 + i}} for i in range(batch)])
    script = tmp / "post.lua"
    script.write_text(POST_SCRIPT % body)
    before = count_rows(store)
    busy = wait_until_idle(20)
    procs = {
        "collector": psutil.Process(collector.proc.pid),
        "consumer": psutil.Process(consumer.pid),
    }
    startup_cpu = {name: sum(p.cpu_times()[:2]) for name, p in procs.items()}
    started = time.perf_counter()
    try:
        result = wrk(collector.url, 16, duration, script, "/collect")
        accepted = (result["requests"] - result["non_2xx"]) * batch
        sent_s = time.perf_counter() - started
        deadline = time.monotonic() + 300
        while count_rows(store) - before < accepted and time.monotonic() < deadline:
            time.sleep(0.2)
        end_to_end_s = time.perf_counter() - started
        stored = count_rows(store) - before
        # CPU-seconds the two processes spent on the load (not starting up): a figure the other work on the machine does
        # not change much (PostgreSQL's and NATS's own CPU are not in it).
        cpu = {name: sum(p.cpu_times()[:2]) - startup_cpu[name] for name, p in procs.items()}
    finally:
        consumer.terminate()
        consumer.wait(30)
        collector.stop()
    return {
        "batch": batch,
        "accepted_points": accepted,
        "stored_points": stored,
        "accepted_per_s": accepted / sent_s,
        "end_to_end_per_s": stored / end_to_end_s,
        "end_to_end_s": end_to_end_s,
        "p99_ms": result["p99"],
        "non_2xx": result["non_2xx"],
        "command": result["command"],
        "cpu_busy_before_pct": busy,
        "collector_cpu_s": cpu["collector"],
        "consumer_cpu_s": cpu["consumer"],
        "points_per_collector_cpu_s": stored / cpu["collector"],
        "points_per_consumer_cpu_s": stored / cpu["consumer"],
    }


def single_get(settings, url: str, tmp: Path, duration: int) -> dict:
    env = family_env(settings, url)
    collector = CollectorProcess(env, tmp / "collector-get.log").wait_ready()
    busy = wait_until_idle(20)
    try:
        data = "%7B%22rt%22%3A12.5%7D"  # {"rt":12.5}
        result = wrk(collector.url, 32, duration, None, f"/collect?app=bench&data={data}")
        return {**result, "cpu_busy_before_pct": busy}
    finally:
        collector.stop()


def fill_raw(store: CollectedStore, points: int, keys: int, hours: int, start: datetime) -> float:
    """``points`` rows over ``keys`` keys and ``hours`` hours, generated inside PostgreSQL."""
    per_second = points / (hours * 3600)
    began = time.perf_counter()
    with store.engine.begin() as conn:
        conn.execute(
            text(
                'INSERT INTO "CollectedMetric" ("MessageId", "MetricKey", "App", "Value", '
                "\"CollectedAt\", \"ReceivedAt\") SELECT 'bench/' || i, 'key' || (i %% :keys), "
                "'bench', round((random() * 1000)::numeric, 3), "
                ":start + make_interval(secs => floor(i / :per_second)), :start "
                "FROM generate_series(0, :n - 1) AS i".replace("%%", "%")
            ),
            {"keys": keys, "start": start, "per_second": per_second, "n": points},
        )
        conn.execute(text('ANALYZE "CollectedMetric"'))
    return time.perf_counter() - began


BASELINE = """
CREATE TEMP TABLE baseline AS
SELECT "MetricKey", date_trunc('hour', "CollectedAt") AS "StartTime", count(*) AS n,
       avg("Value") AS average, min("Value") AS minimum, max("Value") AS maximum,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY "Value") AS median
FROM "CollectedMetric"
WHERE "CollectedAt" >= :start AND "CollectedAt" < :end
GROUP BY "MetricKey", date_trunc('hour', "CollectedAt")
"""


def hourly_stats(url: str, store: CollectedStore, points: int, tmp: Path) -> dict:
    keys, hours = 100, 48
    start = datetime(2025, 6, 1)
    end = start + hours * HOUR
    fill_s = fill_raw(store, points, keys, hours, start)
    busy = wait_until_idle(20)
    t0 = time.perf_counter()
    store.write_hours([start + i * HOUR for i in range(hours)])
    ours_s = time.perf_counter() - t0
    env = {
        "METRICS_WAREHOUSE_URL": url,
        "DAGSTER_HOME": str(tmp / "dagster_home"),
        "METRICS_DATA_DIR": str(tmp),
    }
    (tmp / "dagster_home").mkdir()
    from dagster import DagsterInstance

    with DagsterInstance.local_temp(
        str(tmp / "dagster_home"), overrides={"telemetry": {"enabled": False}}
    ) as instance:
        t0 = time.perf_counter()
        run = materialize_collected(start, end, env, instance)
        dagster_s = time.perf_counter() - t0
    assert run.success, run.error
    wait_until_idle(20)
    with store.engine.begin() as conn:
        t0 = time.perf_counter()
        conn.execute(text(BASELINE), {"start": start, "end": end})
        baseline_s = time.perf_counter() - t0
        mismatches = conn.execute(
            text(
                'SELECT count(*) FROM baseline b JOIN "CollectedMetricHourly" h '
                'ON h."MetricKey" = b."MetricKey" AND h."StartTime" = b."StartTime" '
                'WHERE h."SampleCount" <> b.n OR abs(h."Median" - b.median) > 1e-9 '
                'OR abs(h."Average" - b.average) > 1e-9 OR h."Minimum" <> b.minimum '
                'OR h."Maximum" <> b.maximum'
            )
        ).scalar_one()
        rows = conn.execute(text("SELECT count(*) FROM baseline")).scalar_one()
    return {
        "points": points,
        "keys": keys,
        "hours": hours,
        "rows": rows,
        "mismatches": mismatches,
        "fill_s": fill_s,
        "ours_s": ours_s,
        "dagster_s": dagster_s,
        "baseline_s": baseline_s,
        "ratio": ours_s / baseline_s,
        "ratio_dagster": dagster_s / baseline_s,
        "cpu_busy_before_pct": busy,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of each wrk run")
    parser.add_argument("--points", type=int, default=10_000_000, help="raw points for part 3")
    parser.add_argument("--parts", default="1,2,3")
    parser.add_argument("--out", default="benchmarks/results/collected.json")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    # A SIGTERM (timeout, Ctrl-C in CI) still drops the database and the stream.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"mp_bench_collected_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    stream = f"MPBENCH_{uuid.uuid4().hex[:8].upper()}"
    settings = CollectedSettings(stream=stream, consumer_name=f"{stream}_writer")
    results: dict = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} vCPUs ({_cpu_model()}), Python {platform.python_version()}",
    }
    store = CollectedStore(create_db_engine(url, "warehouse", must_exist=False))
    store.ensure_schema()
    try:
        with tempfile.TemporaryDirectory(prefix="mp-bench-collected-") as folder:
            tmp = Path(folder)
            if "1" in parts:
                results["throughput"] = throughput(settings, url, store, tmp, args.duration, 100)
                print(json.dumps(results["throughput"], indent=1))
            if "2" in parts:
                results["single_get"] = single_get(settings, url, tmp, args.duration)
                print(json.dumps(results["single_get"], indent=1))
            if "3" in parts:
                with store.engine.begin() as conn:
                    conn.execute(text('TRUNCATE "CollectedMetric", "CollectedMetricHourly"'))
                results["hourly"] = hourly_stats(url, store, args.points, tmp)
                print(json.dumps(results["hourly"], indent=1))
    finally:
        store.engine.dispose()
        asyncio.run(delete_stream(settings))
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
