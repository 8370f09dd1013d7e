"""Memory: peak RSS of the run process (`metrics-pipeline materialize`, which executes its runs
in-process) at 1x and 4x the rows per hour over the same partitions. Aggregation is pushed down
to the shards, so the peak should not grow with the data.

    python -m benchmarks.memory --billers 5 --days 14 --per-hour 1000
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import psutil

from benchmarks.data import create_catalog, create_shards
from benchmarks.throughput import END


def peak_rss(cmd: list[str], env: dict) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of a command, sampled every 50 ms."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.05)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.read().decode()[-2000:])
    return peak / 2**20, time.perf_counter() - t0


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--billers", type=int, default=5)
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--per-hour", type=int, default=1000)
    p.add_argument("--factors", type=int, nargs="+", default=[1, 4])
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    start = END - timedelta(days=args.days)
    script = str(Path(sys.executable).parent / "metrics-pipeline")
    result = {"billers": args.billers, "days": args.days, "runs": {}}
    for factor in args.factors:
        with tempfile.TemporaryDirectory(prefix="mpmem_") as tmp:
            env = {
                **os.environ,
                "METRICS_CATALOG_URL": f"sqlite:///{tmp}/catalog.db",
                "METRICS_SHARD_URL_TEMPLATE": f"sqlite:///{tmp}/{{shard}}.db",
                "METRICS_WAREHOUSE_URL": f"sqlite:///{tmp}/warehouse.db",
            }
            env.pop("DAGSTER_HOME", None)
            create_catalog(env["METRICS_CATALOG_URL"], args.billers, args.billers)
            rows = create_shards(
                env["METRICS_SHARD_URL_TEMPLATE"],
                args.billers,
                args.billers,
                args.days,
                args.per_hour * factor,
                END,
            )
            mb, seconds = peak_rss(
                [script, "materialize", "--start", start.isoformat(), "--end", END.isoformat()], env
            )
        result["runs"][f"{factor}x"] = {"rows": rows, "peak_rss_mb": mb, "seconds": seconds}
        print(f"  {factor}x: {rows} rows, peak RSS {mb:.0f} MB, {seconds:.0f}s", flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "memory.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
