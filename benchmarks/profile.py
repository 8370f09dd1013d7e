"""Where the seconds of `metrics-pipeline materialize` go, on each path a user takes.

Runs the real command under py-spy (a sampling profiler that sees every thread, including time
spent inside the database drivers with the GIL released) and sorts every sample by what it was
doing, by the part of the work its stack names (``CATEGORIES``):

- the main thread, which is what the user waits for: start-up (imports, definitions, the
  instance), waiting for the shard threads, the warehouse reads and writes it does itself, the
  daily and weekly rollups, Dagster's events (storing them), the rest of Dagster;
- the shard threads, which is where the CPU goes while the main thread waits: statements inside
  the shard's database, folding their rows into partial aggregates, waiting for the warehouse
  write lock, warehouse writes.

    python -m benchmarks.profile --billers 5 --days 14 --per-hour 3000 --instance sqlite
    python -m benchmarks.profile --billers 50 --days 14 --per-hour 300 --instance postgresql

py-spy needs to ptrace the child (root, or kernel.yama.ptrace_scope=0). The raw samples are kept
(``--out``/profile_<instance>_<billers>b.txt, flamegraph.pl's input).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

from benchmarks.daemon import pg_instance_storage
from benchmarks.limit import SQLITE_FORMS, convert, volume_parser
from benchmarks.throughput import END, drop, materialize_command, setup

#: (category, substrings of a frame "function (file:line)"), in order of precedence: a sample
#: belongs to the first category any frame of its stack names (a warehouse write runs SQLAlchemy's
#: execute too; it counts as a warehouse write, not as time in the shard).
CATEGORIES = [
    ("Dagster events", ("_core/storage/event_log", "handle_new_event", "store_event")),
    ("rollups (daily, weekly)", ("assets/rollups.py", "roll_up (")),
    ("warehouse reads and writes", ("resources/warehouse.py",)),
    ("waiting for the write lock", ("write (metrics_pipeline/datapump/pipeline.py",)),
    (
        "in the shard's database",
        ("do_execute", "fetchall", "fetchone", "fetchmany", "_fetchiter_impl", "connect ("),
    ),
    # Before folding: the main thread waits inside datapump/pipeline.py too, and a shard
    # thread for a read started ahead (``ReadAhead.take``).
    ("waiting for a read ahead", ("ReadAhead.take",)),
    (
        "waiting for the shard threads",
        ("as_completed", "wait (concurrent/futures", "Thread.join", "_wait_for_tstate_lock"),
    ),
    ("folding", ("fold_hourly_rows", "datapump/pipeline.py", "semantics.py", "datapump/sql.py")),
    ("start-up", ("_find_and_load", "definitions.py", "from_config")),
    ("Dagster (other)", ("dagster/",)),
]


def classify(frames: list[str]) -> str:
    if frames and "_worker (concurrent/futures/thread.py" in frames[-1]:
        return "idle (a pool's worker without a task)"
    for name, needles in CATEGORIES:
        if any(n in frame for frame in frames for n in needles):
            return name
    return "other"


def parse(raw: str, rate: int) -> dict:
    """Seconds per category for the main thread and for the other threads together."""
    main: Counter = Counter()
    workers: Counter = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack.startswith("thread ("):
            continue
        thread, _, rest = stack.partition(": ")
        frames = rest.split(";")
        target = main if frames and frames[0] == "MainThread" else workers
        target[classify(frames[1:])] += int(count)
    to_s = lambda c: {k: round(v / rate, 1) for k, v in c.most_common()}  # noqa: E731
    return {"main_thread_s": to_s(main), "shard_threads_s": to_s(workers)}


def instance_home(kind: str, folder: Path, dbs: list) -> str | None:
    if kind == "none":
        return None
    home = folder / f"home_{kind}"
    home.mkdir(parents=True)
    if kind == "postgresql":
        (home / "dagster.yaml").write_text(
            "telemetry:\n  enabled: false\n" + pg_instance_storage(dbs)
        )
    return str(home)


def main(argv=None) -> dict:
    p = volume_parser(__doc__)
    p.add_argument("--instance", choices=["none", "sqlite", "postgresql"], default="sqlite")
    p.add_argument("--form", choices=sorted(SQLITE_FORMS), default="text3")
    p.add_argument("--rate", type=int, default=50, help="samples per second")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    start = END - timedelta(days=args.days)
    with tempfile.TemporaryDirectory(prefix="mp-profile-") as tmp:
        folder, dbs = Path(tmp), []
        try:
            env, warehouse, placement, rows = setup(
                "sqlite", args.billers, args.shards, args.days, args.per_hour, folder, dbs
            )
            if args.form != "sqlalchemy6":
                template = f"sqlite:///{folder}/{args.form}_{{shard}}.db"
                for url in placement:
                    name = url.rsplit("/", 1)[1].removesuffix(".db")
                    convert(
                        url.removeprefix("sqlite:///"), f"{folder}/{args.form}_{name}.db", args.form
                    )
                env["METRICS_SHARD_URL_TEMPLATE"] = template
            run_env = {**os.environ, **env, "METRICS_WAREHOUSE_URL": warehouse("p")}
            run_env.pop("DAGSTER_HOME", None)
            home = instance_home(args.instance, folder, dbs)
            if home:
                run_env["DAGSTER_HOME"] = home
            raw = folder / "samples.txt"
            command = materialize_command(start, END)
            t0 = time.perf_counter()
            proc = subprocess.run(
                [spy, "record", "--idle", "--threads", "--format", "raw", "-r", str(args.rate)]
                + ["-o", str(raw), "--", *command],
                env=run_env,
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(f"materialize failed under py-spy: {proc.stderr[-2000:]}")
            text = raw.read_text()
            result = {
                "args": vars(args),
                "rows": rows,
                "wall_s": round(wall, 1),
                **parse(text, args.rate),
            }
            Path(args.out).mkdir(parents=True, exist_ok=True)
            stem = f"profile_{args.instance}_{args.billers}b"
            (Path(args.out) / f"{stem}.txt").write_text(text)
            (Path(args.out) / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
        finally:
            drop(dbs)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
