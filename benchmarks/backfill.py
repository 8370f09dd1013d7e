"""Backfill at scale: B billers x D days of hours, through one Dagster backfill launched by the
backlog sensor under the real daemon: runs, wall time, partitions per second.

    python -m benchmarks.backfill --billers 50 --days 90
"""

import argparse
import json
import statistics
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dagster import DagsterInstance, RunsFilter

from benchmarks.daemon import Daemon, pg_instance_storage
from benchmarks.data import create_catalog, create_shards
from benchmarks.throughput import drop
from metrics_pipeline.partitions import parse_partition_key
from metrics_pipeline.semantics import hour_start


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--billers", type=int, default=50)
    p.add_argument("--days", type=int, default=90)
    p.add_argument("--shards", type=int, default=10)
    p.add_argument("--per-hour", type=int, default=10)
    p.add_argument("--max-concurrent-runs", type=int, default=4)
    p.add_argument(
        "--budget-minutes",
        type=float,
        default=30,
        help="stop waiting after this long and report what finished",
    )
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    dbs: list[str] = []
    instance_yaml = pg_instance_storage(dbs, args.max_concurrent_runs)
    tmpdir = tempfile.TemporaryDirectory(prefix="mpbackfill_", ignore_cleanup_errors=True)
    with tmpdir as tmp:
        folder = Path(tmp)
        now = datetime.now(UTC).replace(tzinfo=None)
        # Old enough hours only: the backlog sensor leaves the last 2 to the schedule.
        end = hour_start(now) - timedelta(hours=2)
        env = {
            "DAGSTER_EVENT_BATCH_SIZE": "1000",
            "METRICS_CATALOG_URL": f"sqlite:///{folder}/catalog.db",
            "METRICS_SHARD_URL_TEMPLATE": f"sqlite:///{folder}/{{shard}}.db",
            "METRICS_WAREHOUSE_URL": f"sqlite:///{folder}/warehouse.db",
            "METRICS_SENSOR_INTERVAL_S": "5",
            "METRICS_BACKLOG_LOOKBACK_HOURS": str(args.days * 24),
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
        instance.add_dynamic_partitions("billers", [str(b) for b in range(1, args.billers + 1)])
        daemon.start()
        try:
            backfill = daemon.wait("the backlog backfill", lambda: instance.get_backfills(), 300)[0]
            started = backfill.backfill_timestamp

            def done():
                b = instance.get_backfill(backfill.backfill_id)
                return b.status.value != "REQUESTED" and b

            try:
                finished = daemon.wait("the backfill", done, args.budget_minutes * 60)
                status = finished.status.value
            except TimeoutError:
                status = f"still running after the {args.budget_minutes}-minute budget"
            records = instance.get_run_records(
                filters=RunsFilter(tags={"dagster/backfill": backfill.backfill_id})
            )
            done_runs = [
                r for r in records if r.end_time and r.dagster_run.status.value == "SUCCESS"
            ]
            wall = max((r.end_time for r in done_runs), default=started) - started
            # Partitions the finished runs covered: one biller x a range of windows each.
            covered = 0
            for r in done_runs:
                tags = r.dagster_run.tags
                first = parse_partition_key(tags["dagster/asset_partition_range_start"])[1]
                last = parse_partition_key(tags["dagster/asset_partition_range_end"])[1]
                step = (
                    3600
                    if len(tags["dagster/asset_partition_range_start"].split("|")[1]) > 10
                    else (86400 if r.dagster_run.job_name != "weekly_job" else 7 * 86400)
                )
                covered += int((last - first).total_seconds() // step) + 1
            run_seconds = [r.end_time - r.start_time for r in done_runs if r.start_time]
        finally:
            daemon.stop()
        partitions = (
            args.billers * args.days * 24
            + args.billers * (args.days + 1)
            + args.billers * (args.days // 7 + 2)
        )
        result = {
            "billers": args.billers,
            "days": args.days,
            "rows": rows,
            "status": status,
            "runs_finished": len(done_runs),
            "runs_launched": len(records),
            "wall_s": wall,
            "partitions_about": partitions,
            "hourly_partitions": args.billers * args.days * 24,
            "partitions_done": covered,
            "partitions_per_s": covered / wall if wall else 0,
            "run_seconds_median": statistics.median(run_seconds) if run_seconds else None,
            "cpu_s": daemon.cpu_seconds,
            "max_concurrent_runs": args.max_concurrent_runs,
            "budget_minutes": args.budget_minutes,
        }
    drop(dbs)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "backfill.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
