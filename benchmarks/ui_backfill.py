"""A 30-day backfill launched as the UI launches it, with 1,000 billers in the catalog and a
PostgreSQL Dagster instance: dagster-webserver and dagster-daemon on loopback, the backfill
created by the webserver's GraphQL ``launchPartitionBackfill`` (the hourly assets, 720 hour
partitions, as the asset page's "Materialize selected" dialog sends them). Measures the GraphQL
call, the time until the backfill's first run starts, and the peak resident memory of the
daemon's process tree (daemon, its code server, the run workers) and of the webserver's.

Then the backlog sensor's tick: ``build_definitions(env).resolve_sensor_def("backlog_sensor")``
evaluated directly with ``build_sensor_context`` on the same instance, 1,000 billers, its default
7-day look-back, (1) on an empty ledger (every hour missing: the sensor builds a backfill of all
168 hours) and (2) on the ledger the backfill left; plus the daemon's own tick durations for
that sensor, read from the instance.

    python -m benchmarks.ui_backfill --billers 1000 --days 30
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from dagster import DagsterInstance, RunsFilter, build_sensor_context

from benchmarks.daemon import Daemon, pg_instance_storage, runs_detail, sample_tree
from benchmarks.data import create_catalog, create_shards
from benchmarks.throughput import drop
from metrics_pipeline.datapump.assets.common import asset_key
from metrics_pipeline.definitions import build_definitions, build_resources
from metrics_pipeline.partitions import parse_partitions_start, partition_key
from metrics_pipeline.semantics import DAILY, HOURLY, hour_start
from metrics_pipeline.sql.warehouse import AGGREGATES

LAUNCH = """
mutation ($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId }
  ... on PythonError { message } ... on UnauthorizedError { message } } }
"""
LOCATION = """
query { workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus } } } }
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(client: httpx.Client, query: str, **variables) -> dict:
    response = client.post("/graphql", json={"query": query, "variables": variables})
    response.raise_for_status()
    body = response.json()
    if "errors" in body:
        raise RuntimeError(f"GraphQL error: {body['errors']}")
    return body["data"]


def evaluate_backlog_sensor(env: dict, instance: DagsterInstance) -> tuple[float, str]:
    """Seconds for one direct evaluation of backlog_sensor, and what it decided."""
    defs = build_definitions(env, resolve=True)
    sensor = defs.resolve_sensor_def("backlog_sensor")
    t0 = time.perf_counter()
    with build_sensor_context(
        instance=instance,
        resources=build_resources(env, resolve=True),
        repository_def=defs.get_repository_def(),
    ) as ctx:
        result = sensor(ctx)
    seconds = time.perf_counter() - t0
    runs = getattr(result, "run_requests", None) or []
    what = f"{len(runs)} backfill request(s)" if runs else str(getattr(result, "skip_message", ""))
    return seconds, what or type(result).__name__


def daemon_ticks(instance: DagsterInstance, name: str) -> list[float]:
    """Durations of the daemon's finished ticks of the sensor ``name``."""
    out = []
    for state in instance.all_instigator_state():
        if state.instigator_name != name:
            continue
        for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=50):
            if tick.end_timestamp:
                out.append(tick.end_timestamp - tick.timestamp)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--billers", type=int, default=1000)
    p.add_argument("--shards", type=int, default=10)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--traffic-days", type=int, default=1, help="days with calls (the last ones)")
    p.add_argument("--per-hour", type=int, default=2)
    p.add_argument("--watch-minutes", type=float, default=4, help="memory watch after launch")
    p.add_argument(
        "--planned-subset",
        action="store_true",
        help="run the daemon with DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=1 (one planned "
        "event per asset and run instead of one per partition)",
    )
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    dbs: list[str] = []
    load_before = os.getloadavg()[0]
    tmpdir = tempfile.TemporaryDirectory(prefix="mpuibackfill_", ignore_cleanup_errors=True)
    with tmpdir as tmp:
        folder = Path(tmp)
        end = hour_start(datetime.now(UTC).replace(tzinfo=None)) - timedelta(hours=2)
        first = end - timedelta(days=args.days)
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
            "METRICS_PARTITIONS_START": f"{DAILY.floor(first) - timedelta(days=7):%Y-%m-%d}",
            # The daemon's backlog sensor must not launch its own backfill while the UI's is
            # measured: its look-back is 0 here (its daemon ticks are then trivial); its tick is
            # timed below with the default look-back.
            "METRICS_BACKLOG_LOOKBACK_HOURS": "0",
        }
        create_catalog(env["METRICS_CATALOG_URL"], args.billers, args.shards)
        rows = create_shards(
            env["METRICS_SHARD_URL_TEMPLATE"],
            args.billers,
            args.shards,
            args.traffic_days,
            args.per_hour,
            end,
        )
        home = folder / "home"
        daemon = Daemon(home, env, pg_instance_storage(dbs, max_concurrent_runs=2))
        port = free_port()
        web_log = open(home / "webserver.log", "wb")
        web = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagster-webserver"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-w",
                str(home / "workspace.yaml"),
            ],
            env=daemon.env,
            cwd=home,
            stdout=web_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        instance = DagsterInstance.from_config(str(home))
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)
        web_cpu: dict[int, float] = {}
        web_peak = 0
        daemon.start()
        try:

            def location_loaded():
                try:
                    data = graphql(client, LOCATION)["workspaceOrError"]
                except httpx.TransportError:
                    return False
                return all(e["loadStatus"] == "LOADED" for e in data.get("locationEntries", []))

            daemon.wait("the webserver and its code location", location_loaded, 300)
            start = parse_partitions_start(env["METRICS_PARTITIONS_START"])
            names = [partition_key(HOURLY, start, h) for h in HOURLY.starts(first, end)]
            params = {
                "assetSelection": [{"path": asset_key(a, HOURLY).path} for a in AGGREGATES],
                "partitionNames": names,
                "fromFailure": False,
                "title": f"{args.days} days from the benchmark",
            }
            t0 = time.time()
            launched = graphql(client, LAUNCH, params=params)["launchPartitionBackfill"]
            launch_s = time.time() - t0
            if launched["__typename"] != "LaunchBackfillSuccess":
                raise RuntimeError(f"launchPartitionBackfill: {launched}")
            backfill_id = launched["backfillId"]
            print(f"  backfill {backfill_id} launched in {launch_s:.1f}s", flush=True)

            def runs():
                return instance.get_run_records(
                    filters=RunsFilter(tags={"dagster/backfill": backfill_id})
                )

            def first_started():
                web_peak_now = sample_tree(web.pid, web_cpu)
                nonlocal web_peak
                web_peak = max(web_peak, web_peak_now)
                started = [r.start_time for r in runs() if r.start_time]
                return min(started) if started else None

            try:
                first_start = daemon.wait("the backfill's first run", first_started, 600)
                first_run_s = first_start - t0
            except TimeoutError:
                first_run_s = None
            print(f"  first run started after {first_run_s}s", flush=True)

            def finished():
                first_started()
                return instance.get_backfill(backfill_id).status.value != "REQUESTED"

            try:
                daemon.wait("the backfill", finished, args.watch_minutes * 60)
                status = instance.get_backfill(backfill_id).status.value
            except TimeoutError:
                status = f"still running after {args.watch_minutes:g} minutes of watching"
            # The backfill can read complete before its last run has recorded its end.
            deadline = time.monotonic() + 60
            while any(not r.end_time for r in runs()) and time.monotonic() < deadline:
                time.sleep(1)
            records = runs()
            peak_daemon = daemon.peak_rss_mb
            ticks = daemon_ticks(instance, "backlog_sensor")
        finally:
            daemon.stop()
            if web.poll() is None:
                web.send_signal(signal.SIGTERM)
                try:
                    web.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    web.kill()
            # The webserver's code server (and what it started) is in its process group.
            try:
                os.killpg(web.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            web_log.close()
            client.close()

        # The backlog sensor at its defaults (7-day look-back), 1,000 billers, this instance.
        sensor_env = {**os.environ, **env, "DAGSTER_HOME": str(home)}
        sensor_env.pop("METRICS_BACKLOG_LOOKBACK_HOURS")
        after = [evaluate_backlog_sensor(sensor_env, instance) for _ in range(3)]
        empty_env = {**sensor_env, "METRICS_WAREHOUSE_URL": f"sqlite:///{folder}/empty.db"}
        build_resources(empty_env, resolve=True)["warehouse"].ensure_schema()
        empty = [evaluate_backlog_sensor(empty_env, instance) for _ in range(3)]
        instance.dispose()
        result = {
            "runs_detail": runs_detail(records),
            "planned_subset": args.planned_subset,
            "billers": args.billers,
            "days": args.days,
            "hour_partitions": len(names),
            "rows": rows,
            "instance": "PostgreSQL (dagster-postgres); dagster-webserver + dagster-daemon",
            "graphql_launch_s": launch_s,
            "first_run_after_s": first_run_s,
            "status": status,
            "runs": len(records),
            "runs_succeeded": sum(r.dagster_run.status.value == "SUCCESS" for r in records),
            "daemon_tree_peak_rss_mb": peak_daemon,
            "daemon_process_peak_rss_mb": daemon.own_peak_rss / 2**20,
            "daemon_tree_at_peak_mb": daemon.peak_parts,
            "webserver_tree_peak_rss_mb": web_peak / 2**20,
            "sensor_tick_empty_ledger_s": statistics.median(s for s, _ in empty),
            "sensor_tick_empty_ledger": [{"s": s, "result": w} for s, w in empty],
            "sensor_tick_after_backfill_s": statistics.median(s for s, _ in after),
            "sensor_tick_after_backfill": [{"s": s, "result": w} for s, w in after],
            "daemon_backlog_ticks_s": ticks,
            "load_average_1m": [load_before, os.getloadavg()[0]],
        }
    drop(dbs)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    suffix = "_planned_subset" if args.planned_subset else ""
    (Path(args.out) / f"ui_backfill{suffix}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
