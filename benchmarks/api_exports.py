"""Load benchmark of exports (GET /api/v2/exports/{objectName}), not a timed test.

It fills DataPumpErrorAggregation with BILLERS x HOURS hourly rows (100 x 1000 = 100,000 by
default), starts ``metrics-pipeline api`` (one worker) with the in-process task store or with
Redis (a redis-server of its own on a free port: the machine's Redis is left alone), and runs
EXPORTS clients at once, each exporting every row of the window page by page (pageSize 10,000,
JSON). Every client checks it got each row exactly once. It prints rows/s per export, the wall
time, and the peak memory (RSS) of the API process and of Redis.

    python -m benchmarks.api_exports                          # PostgreSQL, memory and redis
    python -m benchmarks.api_exports --backend sqlite --exports 10

All traffic goes to 127.0.0.1.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
import redis
from sqlalchemy import create_engine, insert, text

from benchmarks.api_load import PG_ADMIN_URL, free_port, start_api, wait_until_idle
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.sql.warehouse import ERROR_RATE

START = datetime(2025, 1, 1)


def build_warehouse(url: str, billers: int, hours: int) -> int:
    resource = WarehouseResource(url=url)
    resource.ensure_schema()
    table = resource.tables.table(ERROR_RATE)
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    rows = [
        {
            "BillerId": b,
            "TimeStampTypeId": 1,
            "StartTime": START + timedelta(hours=h),
            "EndTime": START + timedelta(hours=h + 1),
            "RequestCount": 1000 + (b * h) % 997,
            "FailedRequests": (b + h) % 50,
            "ErrorRate": round(((b + h) % 50) / 10, 2),
            "CreatedDate": now,
            "UpdatedDate": now,
        }
        for b in range(1, billers + 1)
        for h in range(hours)
    ]
    with resource.engine().begin() as conn:
        for i in range(0, len(rows), 20_000):
            conn.execute(insert(table), rows[i : i + 20_000])
    resource._engines.dispose()
    return len(rows)


class Sampler:
    """Peak RSS of a process and its children, sampled every 0.2 s."""

    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                procs = [self.process, *self.process.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs))
            except psutil.Error:
                pass
            time.sleep(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def one_export(base: str, params: dict, expected: int, out: list, i: int) -> None:
    started = time.perf_counter()
    keys = set()
    pages = 0
    with httpx.Client(base_url=base, timeout=300) as c:
        token = None
        while True:
            extra = {"continuationToken": token} if token else {}
            r = c.get("/api/v2/exports/DataPumpErrorAggregation", params={**params, **extra})
            if r.status_code != 200:
                out[i] = {"error": f"HTTP {r.status_code}: {r.text[:200]}"}
                return
            body = r.json()
            pages += 1
            keys.update((row["BillerId"], row["StartTime"]) for row in body["rows"])
            token = body["continuationToken"]
            if not token:
                break
    seconds = time.perf_counter() - started
    out[i] = {"rows": len(keys), "pages": pages, "seconds": seconds, "ok": len(keys) == expected}


def run(url: str, store: str, exports: int, expected: int, page_size: int, hours: int) -> dict:
    env = {
        "METRICS_WAREHOUSE_URL": url,
        "METRICS_API_WORKERS": "1",
        "METRICS_API_TOKENS_FILE": "",
        "REDIS_URL": "",
        "METRICS_API_EXPORT_MAX_TASKS": str(max(200, exports)),
        "METRICS_API_EXPORT_CACHE_MB": "4096",
    }
    redis_process = None
    if store == "redis":
        rport = free_port()
        redis_process = subprocess.Popen(
            [
                shutil.which("redis-server"),
                "--port",
                str(rport),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        env["REDIS_URL"] = f"redis://127.0.0.1:{rport}/0"
        env["METRICS_API_CACHE_PREFIX"] = f"bench-{uuid.uuid4().hex[:8]}:"
        time.sleep(0.5)
    port = free_port()
    log = Path(tempfile.mkdtemp()) / "api.log"
    busy = wait_until_idle(60)
    api = start_api(env, port, log)
    results: list = [None] * exports
    redis_peak = 0
    try:
        base = f"http://127.0.0.1:{port}"
        params = {
            "fromDate": START.isoformat(),
            "toDate": (START + timedelta(hours=hours)).isoformat(),
            "pageSize": page_size,
        }
        idle_rss = psutil.Process(api.pid).memory_info().rss
        threads = [
            threading.Thread(target=one_export, args=(base, params, expected, results, i))
            for i in range(exports)
        ]
        with Sampler(api.pid) as sampler:
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(timeout=0.5)
                    if redis_process is not None:
                        info = redis.Redis(port=rport).info("memory")
                        redis_peak = max(redis_peak, info["used_memory"])
            wall = time.perf_counter() - started
    finally:
        api.terminate()
        api.wait(timeout=30)
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(timeout=10)
    errors = [r["error"] for r in results if r and "error" in r]
    done = [r for r in results if r and "error" not in r]
    rates = [r["rows"] / r["seconds"] for r in done]
    return {
        "store": store,
        "exports": exports,
        "rows_per_export": expected,
        "page_size": page_size,
        "all_rows_once": bool(done) and all(r["ok"] for r in done) and not errors,
        "errors": errors[:3],
        "wall_s": round(wall, 1),
        "rows_per_s_per_export": {
            "median": round(statistics.median(rates)) if rates else 0,
            "min": round(min(rates)) if rates else 0,
            "max": round(max(rates)) if rates else 0,
        },
        "rows_per_s_total": round(sum(r["rows"] for r in done) / wall),
        "api_rss_idle_mb": round(idle_rss / 2**20),
        "api_rss_peak_mb": round(sampler.peak / 2**20),
        "redis_peak_mb": round(redis_peak / 2**20) if redis_process is not None else None,
        "cpu_busy_before_pct": round(busy),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    p.add_argument("--exports", type=int, default=50)
    p.add_argument("--billers", type=int, default=100)
    p.add_argument("--hours", type=int, default=1000)
    p.add_argument("--page-size", type=int, default=10_000)
    p.add_argument("--stores", nargs="+", choices=["memory", "redis"], default=["memory", "redis"])
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    admin = None
    if args.backend == "postgres":
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        name = f"mp_bench_exports_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    else:
        url = f"sqlite:///{tempfile.mkdtemp()}/warehouse.db"
    try:
        expected = build_warehouse(url, args.billers, args.hours)
        out = []
        for store in args.stores:
            result = run(url, store, args.exports, expected, args.page_size, args.hours)
            result["backend"] = args.backend
            print(json.dumps(result), flush=True)
            out.append(result)
        if args.out:
            args.out.write_text(json.dumps(out, indent=1) + "\n")
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
