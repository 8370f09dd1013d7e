"""Backfill at scale: B billers x D days of hours with nothing written yet, mended by one real
Dagster backfill (Backfills page) that the backlog sensor launches because the coverage ledger
says the hours are not covered, run by the real dagster-daemon on a PostgreSQL instance (as
deployed). Reports the wall time from the backfill's creation to its end, its runs, and the
hours the ledger says are covered afterwards.

    python -m benchmarks.backfill --billers 50 --days 90
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dagster import DagsterInstance, RunsFilter

from benchmarks.daemon import Daemon, pg_instance_storage, runs_detail
from benchmarks.data import create_catalog, create_shards
from benchmarks.throughput import drop
from metrics_pipeline.datapump.backlog import BacklogSettings, find_backlog
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import DAILY, hour_start


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--billers", type=int, default=50)
    p.add_argument("--days", type=int, default=90)
    p.add_argument("--shards", type=int, default=10)
    p.add_argument("--per-hour", type=int, default=10)
    p.add_argument("--max-concurrent-runs", type=int, default=2)
    p.add_argument(
        "--budget-minutes",
        type=float,
        default=15,
        help="stop waiting after this long and report what finished",
    )
    p.add_argument(
        "--planned-subset",
        action="store_true",
        help="run the daemon with DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=1 (one planned "
        "event per asset and run instead of one per partition)",
    )
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    dbs: list[str] = []
    instance_yaml = pg_instance_storage(dbs, args.max_concurrent_runs)
    tmpdir = tempfile.TemporaryDirectory(prefix="mpbackfill_", ignore_cleanup_errors=True)
    load_before = os.getloadavg()[0]
    with tmpdir as tmp:
        folder = Path(tmp)
        now = datetime.now(UTC).replace(tzinfo=None)
        # Old enough hours only: the backlog sensor leaves the last 2 to the schedule.
        end = hour_start(now) - timedelta(hours=2)
        lookback = args.days * 24
        env = {
            "DAGSTER_EVENT_BATCH_SIZE": "1000",
            **(
                {"DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1"}
                if args.planned_subset
                else {}
            ),
            "METRICS_CATALOG_URL": f"sqlite:///{folder}/catalog.db",
            "METRICS_SHARD_URL_TEMPLATE": f"sqlite:///{folder}/{{shard}}.db",
            "METRICS_WAREHOUSE_URL": f"sqlite:///{folder}/warehouse.db",
            "METRICS_PARTITIONS_START": f"{DAILY.floor(end - timedelta(hours=lookback)):%Y-%m-%d}",
            "METRICS_SENSOR_INTERVAL_S": "5",
            "METRICS_BACKLOG_LOOKBACK_HOURS": str(lookback),
            "METRICS_BACKLOG_ALERT_THRESHOLD": str(10**9),
        }
        create_catalog(env["METRICS_CATALOG_URL"], args.billers, args.shards)
        rows = create_shards(
            env["METRICS_SHARD_URL_TEMPLATE"],
            args.billers,
            args.shards,
            args.days,
            args.per_hour,
            end,
        )
        home = folder / "home"
        daemon = Daemon(home, env, instance_yaml)
        instance = DagsterInstance.from_config(str(home))
        daemon.start()
        try:
            backfill = daemon.wait("the backlog backfill", lambda: instance.get_backfills(), 600)[0]
            started = backfill.backfill_timestamp
            print(f"  backfill {backfill.backfill_id} created", flush=True)

            def done():
                b = instance.get_backfill(backfill.backfill_id)
                return b.status.value != "REQUESTED" and b

            try:
                finished = daemon.wait("the backfill", done, args.budget_minutes * 60)
                status = finished.status.value
            except TimeoutError:
                status = f"still running after the {args.budget_minutes:g}-minute budget"

            def runs():
                return instance.get_run_records(
                    filters=RunsFilter(tags={"dagster/backfill": backfill.backfill_id})
                )

            # The backfill can read complete before its last run has recorded its end.
            deadline = time.monotonic() + 60
            while any(not r.end_time for r in runs()) and time.monotonic() < deadline:
                time.sleep(1)
            records = runs()
            done_runs = [r for r in records if r.end_time]
            ok = [r for r in done_runs if r.dagster_run.status.value == "SUCCESS"]
            first_start = min((r.start_time for r in records if r.start_time), default=None)
            wall = max((r.end_time for r in done_runs), default=started) - started
            run_seconds = [r.end_time - r.start_time for r in done_runs if r.start_time]
            peak_rss = daemon.peak_rss_mb
        finally:
            daemon.stop()
        settings = BacklogSettings.from_env(env)
        warehouse = WarehouseResource(url=env["METRICS_WAREHOUSE_URL"])
        left = find_backlog(
            warehouse,
            list(range(1, args.billers + 1)),
            now,
            settings,
            datetime.fromisoformat(env["METRICS_PARTITIONS_START"]),
        )
        hours = int((left.end - left.start).total_seconds() // 3600)
        result = {
            "runs_detail": runs_detail(records),
            "planned_subset": args.planned_subset,
            "billers": args.billers,
            "days": args.days,
            "rows": rows,
            "instance": "PostgreSQL (dagster-postgres), real dagster-daemon, QueuedRunCoordinator",
            "status": status,
            "runs_launched": len(records),
            "runs_succeeded": len(ok),
            "wall_s": wall,
            "first_run_after_s": first_start - started if first_start else None,
            "hours_in_window": hours,
            "hours_not_covered_after": len(left.gaps),
            "biller_hours": args.billers * hours,
            "run_seconds_median": statistics.median(run_seconds) if run_seconds else None,
            "daemon_tree_cpu_s": daemon.cpu_seconds,
            "daemon_tree_peak_rss_mb": peak_rss,
            "daemon_tree_at_peak_mb": daemon.peak_parts,
            "max_concurrent_runs": args.max_concurrent_runs,
            "budget_minutes": args.budget_minutes,
            "load_average_1m": [load_before, os.getloadavg()[0]],
        }
    drop(dbs)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    suffix = "_planned_subset" if args.planned_subset else ""
    (Path(args.out) / f"backfill{suffix}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
