"""`make bench`: every benchmark, then docs/benchmarks.md from their results.

Results go to benchmarks/results/*.json (committed with the doc, so every figure can be traced);
`--only` re-runs some of them and re-renders the doc from all the results present.
"""

import argparse
import contextlib
import io
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import backfill, events, memory, refresh, throughput, ui_backfill
from benchmarks.report import render

OUT = Path("benchmarks/results")
STEPS = ("throughput", "events", "refresh", "backfill", "ui_backfill", "memory", "api")


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} vCPUs ({cpu}), {mem:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--only", nargs="+", choices=STEPS, default=list(STEPS))
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument(
        "--render", action="store_true", help="only re-render docs/benchmarks.md from results"
    )
    args = p.parse_args(argv)
    if args.render:
        args.only = []
    OUT.mkdir(parents=True, exist_ok=True)
    if "throughput" in args.only:
        # The same 5.04M calls (14 days, 5 SQLite shards) as 5 x 3,000 and 50 x 300 per hour.
        for billers, per_hour in ((5, 3000), (50, 300)):
            print(f"throughput ({billers} billers)", flush=True)
            throughput.main(
                [
                    *("--billers", str(billers), "--per-hour", str(per_hour), "--shards", "5"),
                    *("--repeat", str(args.repeat), "--pg-instance"),
                ]
            )
    if "events" in args.only:
        print("Dagster events per run (20 and 200 billers)", flush=True)
        events.main(["--billers", "20", "200"])
    if "refresh" in args.only:
        print("refresh cycle", flush=True)
        refresh.main(["--billers", "20", "200", "--repeat", str(args.repeat)])
    # Each with Dagster's defaults, then with one planned event per asset and run in the daemon.
    variants = ([], ["--planned-subset"])
    if "backfill" in args.only:
        for extra in variants:
            print(f"backfill (budget 15 minutes) {' '.join(extra)}", flush=True)
            backfill.main(["--billers", "50", "--days", "90", "--budget-minutes", "15", *extra])
    if "ui_backfill" in args.only:
        for extra in variants:
            print(f"backfill launched through GraphQL, 1,000 billers {' '.join(extra)}", flush=True)
            ui_backfill.main(["--billers", "1000", "--days", "30", "--watch-minutes", "2", *extra])
    if "memory" in args.only:
        print("memory", flush=True)
        memory.main(["--days", "7"])
    if "api" in args.only:
        print("API load (wrk)", flush=True)
        buf = io.StringIO()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.api_load",
                "--duration",
                "15",
                "--configs",
                "1/off/5,1/on/5,1/off/0",
            ],
            capture_output=True,
            text=True,
        )
        buf.write(proc.stdout)
        (OUT / "api.md").write_text(buf.getvalue())
    meta = {
        "machine": machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "repeat": args.repeat,
    }
    Path("docs/benchmarks.md").write_text(render(OUT, meta))
    print("wrote docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
