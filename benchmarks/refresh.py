"""Refresh cycle: N billers with light traffic, one refresh (the running hour, day and week, every
biller inside each partition) through the real daemon on a PostgreSQL instance (as deployed):
wall time from the schedule's tick to the weekly run's end, CPU seconds of the daemon's process
tree, runs launched, and the Dagster events the cycle's runs wrote (rows of the instance's event
log), which must not grow with the billers.

    python -m benchmarks.refresh --billers 200 --shards 10
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from benchmarks.daemon import Daemon, pg_instance_storage
from benchmarks.data import create_catalog, create_shards
from benchmarks.throughput import drop
from metrics_pipeline.semantics import hour_start


def instance_yaml(kind: str, dbs: list) -> str:
    """Dagster instance storage: PostgreSQL as deployed (deploy/), or the local SQLite default."""
    if kind == "sqlite":
        return (
            "run_coordinator:\n  module: dagster.core.run_coordinator\n"
            "  class: QueuedRunCoordinator\n  config:\n    dequeue_interval_seconds: 1\n"
        )
    return pg_instance_storage(dbs)


def one_cycle(
    billers: int, shards: int, per_hour: int, folder: Path, instance_kind: str, dbs: list
) -> dict:
    now = datetime.now(UTC).replace(tzinfo=None)
    env = {
        # Batched event writes (one INSERT for a run's thousands of partition events), as the
        # deployment sets it.
        "DAGSTER_EVENT_BATCH_SIZE": "1000",
        "METRICS_CATALOG_URL": f"sqlite:///{folder}/catalog.db",
        "METRICS_SHARD_URL_TEMPLATE": f"sqlite:///{folder}/{{shard}}.db",
        "METRICS_WAREHOUSE_URL": f"sqlite:///{folder}/warehouse.db",
        "METRICS_REFRESH_MINUTES": "1",
        "METRICS_SENSOR_INTERVAL_S": "2",
        "METRICS_BACKLOG_LOOKBACK_HOURS": "0",  # measure the refresh alone
    }
    create_catalog(env["METRICS_CATALOG_URL"], billers, shards)
    create_shards(
        env["METRICS_SHARD_URL_TEMPLATE"],
        billers,
        shards,
        1,
        per_hour,
        hour_start(now) + timedelta(hours=1),
    )
    home = folder / "home"
    daemon = Daemon(home, env, instance_yaml(instance_kind, dbs))
    instance = DagsterInstance.from_config(str(home))
    daemon.start()
    try:

        def first_refresh():
            runs = instance.get_runs(filters=RunsFilter(tags={"metrics/level": "hourly"}))
            return [r for r in runs if r.tags.get("dagster/schedule_name") == "refresh_schedule"]

        [hourly, *_] = daemon.wait("the scheduled refresh", first_refresh, 150)
        refresh = hourly.tags["metrics/refresh"]
        daemon.sample()
        cpu_before = daemon.cpu_seconds  # start-up and code loading are not the cycle's

        def weekly_done():
            runs = instance.get_runs(
                filters=RunsFilter(
                    tags={"metrics/refresh": refresh, "metrics/level": "weekly"},
                    statuses=[DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE],
                )
            )
            return runs

        [weekly] = daemon.wait("the weekly run of that refresh", weekly_done, 600)
        runs = instance.get_runs(filters=RunsFilter(tags={"metrics/refresh": refresh}))
        first = instance.get_run_record_by_id(hourly.run_id)
        last = instance.get_run_record_by_id(weekly.run_id)
        wall = last.end_time - first.create_timestamp.timestamp()
        daemon.sample()
        events = {r.job_name: len(instance.all_logs(r.run_id)) for r in runs}
        return {
            "billers": billers,
            "runs": len(runs),
            "events": sum(events.values()),
            "events_per_job": events,
            "statuses": sorted(r.status.value for r in runs),
            "wall_s": wall,
            "cpu_s": daemon.cpu_seconds - cpu_before,
            "run_seconds": sorted(
                (instance.get_run_record_by_id(r.run_id).end_time or 0)
                - (instance.get_run_record_by_id(r.run_id).start_time or 0)
                for r in runs
            ),
        }
    finally:
        daemon.stop()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--billers", type=int, nargs="+", default=[20, 200])
    p.add_argument("--shards", type=int, default=10)
    p.add_argument("--per-hour", type=int, default=20)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--instance", choices=["postgres", "sqlite"], default="postgres")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    result = {"instance": args.instance, "load_average_1m": os.getloadavg()[0]}
    dbs: list[str] = []
    for n in args.billers:
        cycles = []
        for i in range(args.repeat):
            tmpdir = tempfile.TemporaryDirectory(prefix="mprefresh_", ignore_cleanup_errors=True)
            with tmpdir as tmp:
                try:
                    cycles.append(
                        one_cycle(
                            n, min(args.shards, n), args.per_hour, Path(tmp), args.instance, dbs
                        )
                    )
                finally:
                    drop(dbs)
                    dbs.clear()
            print(
                f"  {n} billers, cycle {i + 1}: {cycles[-1]['wall_s']:.1f}s wall, "
                f"{cycles[-1]['cpu_s']:.1f}s CPU, {cycles[-1]['runs']} runs, "
                f"{cycles[-1]['events']} events",
                flush=True,
            )
            time.sleep(1)
        result[str(n)] = {
            "wall_s": statistics.median(c["wall_s"] for c in cycles),
            "cpu_s": statistics.median(c["cpu_s"] for c in cycles),
            "runs": statistics.median(c["runs"] for c in cycles),
            "events": statistics.median(c["events"] for c in cycles),
            "cycles": cycles,
        }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "refresh.json").write_text(json.dumps(result, indent=2))
    print(
        json.dumps(
            {
                k: {x: v[x] for x in ("wall_s", "cpu_s", "runs", "events")}
                for k, v in result.items()
                if k not in ("instance", "load_average_1m")
            }
        )
    )
    return result


if __name__ == "__main__":
    main()
