"""Dagster events per run: `metrics-pipeline materialize` of the same week with DAGSTER_HOME set
(Dagster's SQLite instance), at 20 and at 200 billers, light traffic. Counts the rows of the
instance's event log per run and by type: with time-only partitions they must not depend on the
number of billers. (Events per refresh cycle, under the daemon, are in refresh.py.)

    python -m benchmarks.events --billers 20 200
"""

import argparse
import json
import os
import tempfile
from datetime import timedelta
from pathlib import Path

from benchmarks.data import create_catalog, create_shards
from benchmarks.throughput import END, count_events, materialize


def one(billers: int, shards: int, days: int, per_hour: int, folder: Path) -> dict:
    env = {
        **os.environ,
        "METRICS_CATALOG_URL": f"sqlite:///{folder}/catalog.db",
        "METRICS_SHARD_URL_TEMPLATE": f"sqlite:///{folder}/{{shard}}.db",
        "METRICS_WAREHOUSE_URL": f"sqlite:///{folder}/warehouse.db",
        "METRICS_DATA_DIR": str(folder),
        "DAGSTER_HOME": str(folder / "dagster_home"),
    }
    create_catalog(env["METRICS_CATALOG_URL"], billers, shards)
    rows = create_shards(env["METRICS_SHARD_URL_TEMPLATE"], billers, shards, days, per_hour, END)
    start = END - timedelta(days=days)
    seconds = materialize(env, start, END)
    counted = count_events(env["DAGSTER_HOME"])
    return {"billers": billers, "rows": rows, "seconds": seconds, **counted}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--billers", type=int, nargs="+", default=[20, 200])
    p.add_argument("--shards", type=int, default=10)
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--per-hour", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    result = {"days": args.days, "per_hour": args.per_hour, "instance": "SQLite (DAGSTER_HOME)"}
    for n in args.billers:
        with tempfile.TemporaryDirectory(prefix="mpevents_") as tmp:
            r = one(n, min(args.shards, n), args.days, args.per_hour, Path(tmp))
        result[str(n)] = r
        print(
            f"  {n} billers: {r['events']} events in {r['runs']} runs "
            f"({[x['events'] for x in r['per_run']]}), {r['seconds']:.1f}s",
            flush=True,
        )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "events.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
