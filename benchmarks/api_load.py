"""Load benchmark of GET /api/metrics with wrk (a real HTTP load tool), not a timed test.

It builds a warehouse with BILLERS billers x DAYS days of hourly rows (plus their daily and
weekly rows), starts ``metrics-pipeline api`` with bearer tokens on, and lets wrk ask for whole
30-day hourly series (720 points a response), rotating over billers and metric types so no
single answer is hot. It prints one Markdown row per configuration: req/s, p50 and p99 latency.

    python -m benchmarks.api_load                       # SQLite, 1 and 2 workers, 32 connections
    python -m benchmarks.api_load --backend postgres    # a throwaway database on the local server

Needs Debian's ``wrk`` (apt-get install wrk). All traffic goes to 127.0.0.1.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import numpy as np
import psutil
from sqlalchemy import create_engine, text

from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import DAILY, HOURLY, WEEKLY, Partial, Sketch
from metrics_pipeline.web.auth import token_digest

TOKEN = "benchmark-token"
PG_ADMIN_URL = os.environ.get(
    "METRICS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
CLI = Path(sys.executable).with_name("metrics-pipeline")

WRK_SCRIPT = """
local billers = {%(billers)s}
local metrics = {1, 2, 3, 4, 5, 6, 7, 8}
local n = 0
wrk.headers["Authorization"] = "Bearer %(token)s"
request = function()
  n = n + 1
  local b = billers[(n %% #billers) + 1]
  local m = metrics[(math.floor(n / #billers) %% #metrics) + 1]
  local path = "/api/metrics/" .. b .. "?metricTypeId=" .. m ..
    "&timeStampTypeId=1&from=%(start)s&to=%(end)s"
  return wrk.format("GET", path)
end
"""


def build_warehouse(url: str, billers: list[int], end: datetime, days: int) -> None:
    rng = np.random.default_rng(11)
    resource = WarehouseResource(url=url)
    hours = [end - timedelta(hours=h) for h in range(days * 24, 0, -1)]

    def partial() -> Partial:
        n = int(rng.integers(50, 3000))
        failed = int(rng.integers(0, n // 20 + 1))
        total = Decimal(int(rng.integers(80, 400)) * n)
        pct = {p: Decimal(int(rng.integers(50, 2000))) for p in (50, 95, 99)}
        sketch = Sketch({int(rng.integers(900, 1200)): n})
        return Partial(n, failed, failed // 3, n, total, sketch, pct)

    resource.write_partials(HOURLY, {(b, h): partial() for b in billers for h in hours})
    for level in (DAILY, WEEKLY):
        starts = sorted({level.window(h)[0] for h in hours})
        resource.write_partials(level, {(b, s): partial() for b in billers for s in starts})
    resource._engines.dispose()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_api(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [str(CLI), "api", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **env},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("the API did not answer within 60 s")


def to_ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(output: str) -> dict:
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+\w+)\s*$", output, re.M))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors:.*", output)
    return {
        "rps": float(rps.group(1)),
        "p50": to_ms(latency["50"]),
        "p90": to_ms(latency["90"]),
        "p99": to_ms(latency["99"]),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(0) if socket_errors else "",
    }


def wait_until_idle(limit_s: int, threshold: float = 15.0) -> float:
    """Wait (up to ``limit_s``) until the CPUs are less than ``threshold`` % busy over 2 s: on a
    2-core machine other work would be measured too. Returns the busy % found."""
    deadline = time.monotonic() + limit_s
    busy = psutil.cpu_percent(interval=2)
    while busy >= threshold and time.monotonic() < deadline:
        busy = psutil.cpu_percent(interval=2)
    if busy >= threshold:
        print(
            f"warning: CPUs {busy:.0f}% busy before the run; figures include other work",
            file=sys.stderr,
        )
    return busy


def run_wrk(port: int, script: Path, connections: int, duration: int, threads: int) -> dict:
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}",
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result = parse_wrk(output)
    result["command"] = " ".join(command)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--configs",
        default="1/on/5,2/on/5,2/off/5,2/on/0",
        help="configurations to measure: workers/access log (on|off)/series cache seconds, ...",
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (it shares the CPUs)")
    parser.add_argument("--duration", type=int, default=20, help="seconds per measurement")
    parser.add_argument("--billers", type=int, default=20)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument(
        "--wait-idle", type=int, default=300, help="seconds to wait for an idle machine first"
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.stderr.write("api_load: wrk is not installed (apt-get install wrk)\n")
        return 2

    folder = Path(tempfile.mkdtemp(prefix="api-load-"))
    end = datetime.now(UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=args.days)
    billers = list(range(1001, 1001 + args.billers))
    admin = database = None
    if args.backend == "sqlite":
        url = f"sqlite:///{folder / 'warehouse.db'}"
    else:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        database = f"mp_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{database}"'))
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"
    try:
        started = time.monotonic()
        build_warehouse(url, billers, end, args.days)
        print(
            f"warehouse: {args.backend}, {len(billers)} billers x {args.days * 24} hours "
            f"({time.monotonic() - started:.1f}s to build)",
            file=sys.stderr,
        )
        tokens = folder / "tokens.json"
        tokens.write_text(
            json.dumps([{"name": "bench", "sha256": token_digest(TOKEN), "billers": "*"}])
        )
        script = folder / "load.lua"
        script.write_text(
            WRK_SCRIPT
            % {
                "billers": ", ".join(map(str, billers)),
                "token": TOKEN,
                "start": start.isoformat(),
                "end": end.isoformat(),
            }
        )
        rows = []
        for config in args.configs.split(","):
            workers, access_log, cache_s = config.split("/")
            port = free_port()
            env = {
                "METRICS_WAREHOUSE_URL": url,
                "METRICS_API_TOKENS_FILE": str(tokens),
                "METRICS_API_WORKERS": workers,
                "REDIS_URL": "",
                "METRICS_API_ACCESS_LOG": "1" if access_log == "on" else "0",
                "METRICS_API_SERIES_CACHE_SECONDS": cache_s,
            }
            process = start_api(env, port, folder / f"api-{len(rows)}.log")
            try:
                check = httpx.get(
                    f"http://127.0.0.1:{port}/api/metrics/{billers[0]}",
                    params={
                        "metricTypeId": 1,
                        "timeStampTypeId": 1,
                        "from": start.isoformat(),
                        "to": end.isoformat(),
                    },
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
                points = len(check.json()["points"])
                assert points == args.days * 24, points
                load = wait_until_idle(args.wait_idle)
                run_wrk(port, script, args.connections, 3, args.threads)  # warm-up
                result = run_wrk(port, script, args.connections, args.duration, args.threads)
            finally:
                process.send_signal(signal.SIGINT)
                process.wait(timeout=30)
            result.update(
                workers=workers,
                access_log=access_log,
                cache_s=cache_s,
                load=load,
                points=points,
                bytes=len(check.content),
            )
            rows.append(result)
            print(f"{config}: {result}", file=sys.stderr)
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            admin.dispose()
        shutil.rmtree(folder, ignore_errors=True)

    print(
        f"\nMachine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"{_cpu_model()}, Python {platform.python_version()}; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    print(
        f"Backend: {args.backend}; {args.connections} connections, wrk -t{args.threads}, "
        f"{args.duration}s per run; response = {rows[0]['points']} points "
        f"({rows[0]['bytes']} bytes)\n"
    )
    print(
        "| workers | access log | answer cache | req/s | p50 ms | p90 ms | p99 ms | non-2xx "
        "| CPU busy before |"
    )
    print("|---:|:---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cache = f"{r['cache_s']} s" if r["cache_s"] != "0" else "off"
        print(
            f"| {r['workers']} | {r['access_log']} | {cache} | {r['rps']:.0f} | "
            f"{r['p50']:.1f} | {r['p90']:.1f} | {r['p99']:.1f} | {r['non_2xx']} | "
            f"{r['load']:.0f} % |"
        )
    print(f"\nCommand: {rows[-1]['command']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
