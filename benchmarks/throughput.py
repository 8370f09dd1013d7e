"""Throughput: `metrics-pipeline materialize` against the database's own GROUP BY.

(a) the real command over the window (every hourly, daily and weekly partition, fresh warehouse)
    on the user's path: ``DAGSTER_HOME`` set to a new folder (Dagster's default SQLite instance,
    as `make demo` runs it), with the Dagster events it wrote counted per run; (am) the same
    command with no ``DAGSTER_HOME`` (an in-memory instance), for reference; (b) hand-written SQL
    per shard computing the same hourly
    aggregates inside the database — counts, failures, timeouts, response-time sums, the sketch
    histogram and the exact percentiles (the limit), (b1) the pipeline's own shard statements run
    alone (what Dagster, folding and the warehouse writes add is a - b1), (b0) a plain
    counts-only GROUP BY for scale, (c) pandas over the same rows (``--pandas``). Every figure
    is the median of --repeat runs; every run measures all of them one after the other.

    python -m benchmarks.throughput --backend sqlite --billers 5 --days 14 --per-hour 3000
    python -m benchmarks.throughput --backend sqlite --billers 50 --shards 5 --per-hour 300
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
from sqlalchemy import create_engine, text

from benchmarks.daemon import pg_instance_storage
from benchmarks.data import create_catalog, create_shards, shard_of
from metrics_pipeline.datapump.shards import ShardsResource
from metrics_pipeline.semantics import SKETCH_GAMMA

PG_ADMIN = os.environ.get(
    "METRICS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
#: A Sunday, so the two weeks before it are whole weeks: the command does not widen the window.
END = datetime(2026, 11, 22)
LOG_GAMMA = math.log(SKETCH_GAMMA)

HOUR_EXPR = {
    "sqlite": "strftime('%Y-%m-%d %H:00:00', \"CreatedDate\")",
    "postgresql": "date_trunc('hour', \"CreatedDate\")",
}
LN = {"sqlite": "ln", "postgresql": "ln"}


def facts_sql(backend: str) -> str:
    """The hand-written hourly aggregate with the sketch histogram (what the pipeline needs)."""
    s = 'trim("StatusCode")'
    digits = (
        f"{s} ~ '^[0-9]+$'" if backend == "postgresql" else f"{s} <> '' AND {s} NOT GLOB '*[^0-9]*'"
    )
    timeout = (
        f"((CASE WHEN {digits} THEN CAST({s} AS BIGINT) END) IN (408, 504) "
        f"OR lower({s}) = 'timeout' OR \"ResponseTime\" >= 30000)"
    )
    ok = f"(CASE WHEN {digits} THEN CAST({s} AS BIGINT) END) BETWEEN 200 AND 399"
    real = "DOUBLE PRECISION" if backend == "postgresql" else "REAL"
    bucket = (
        f'CASE WHEN "ResponseTime" > 0 THEN CAST(ceil(ln(CAST("ResponseTime" AS {real})) '
        f'/ {LOG_GAMMA!r}) AS BIGINT) WHEN "ResponseTime" = 0 THEN -1000000 END'
    )
    return f"""
        SELECT "BillerId", {HOUR_EXPR[backend]} AS hr, {bucket} AS bucket, COUNT(*),
               SUM(CASE WHEN {timeout} THEN 1 ELSE 0 END),
               SUM(CASE WHEN {timeout} THEN 1 WHEN {ok} THEN 0 ELSE 1 END),
               COUNT(CASE WHEN "ResponseTime" >= 0 THEN 1 END),
               SUM(CASE WHEN "ResponseTime" >= 0 THEN "ResponseTime" END)
        FROM "DataPumpDetail" WHERE "CreatedDate" >= :s AND "CreatedDate" < :e
        GROUP BY 1, 2, 3"""


def percentiles_sql(backend: str) -> str:
    hour = HOUR_EXPR[backend]
    return f"""
        SELECT "BillerId", hr, rn, n, "ResponseTime" FROM (
            SELECT "BillerId", {hour} AS hr, "ResponseTime",
                   ROW_NUMBER() OVER (PARTITION BY "BillerId", {hour} ORDER BY "ResponseTime") AS rn,
                   COUNT(*) OVER (PARTITION BY "BillerId", {hour} ORDER BY "ResponseTime"
                                  ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS n
            FROM "DataPumpDetail"
            WHERE "CreatedDate" >= :s AND "CreatedDate" < :e AND "ResponseTime" >= 0) x
        WHERE rn = (50 * n + 99) / 100 OR rn = (95 * n + 99) / 100 OR rn = (99 * n + 99) / 100"""


def counts_sql(backend: str) -> str:
    return f"""SELECT "BillerId", {HOUR_EXPR[backend]} AS hr, COUNT(*), SUM("ResponseTime")
               FROM "DataPumpDetail" WHERE "CreatedDate" >= :s AND "CreatedDate" < :e GROUP BY 1, 2"""


def _params(backend, start, end):
    if backend == "sqlite":  # stored as SQLAlchemy writes SQLite timestamps
        return {
            "s": start.strftime("%Y-%m-%d %H:%M:%S.%f"),
            "e": end.strftime("%Y-%m-%d %H:%M:%S.%f"),
        }
    return {"s": start, "e": end}


def run_sql(urls, backend, statements, start, end, parallel) -> float:
    def one(url):
        engine = create_engine(url)
        with engine.connect() as conn:
            for stmt in statements:
                conn.execute(text(stmt), _params(backend, start, end)).fetchall()
        engine.dispose()

    return _timed_per_shard(one, urls, parallel)


def run_pipeline_sql(shards: dict[str, list[int]], start, end, parallel) -> float:
    """(b1) The pipeline's own shard reads, alone: ``ShardsResource.read_hourly`` (the form
    checks, the fast or general statements, chunk by chunk, folded into partials) without
    Dagster or warehouse writes. ``shards`` maps each shard URL to its billers."""

    def one(url):
        reader = ShardsResource(url_template=url)
        for _ in reader.read_hourly("shard", shards[url], start, end):
            pass
        reader.teardown_after_execution(None)

    return _timed_per_shard(one, list(shards), parallel)


def _timed_per_shard(one, urls, parallel) -> float:
    """Seconds to run ``one(url)`` for every shard, ``parallel`` at once (as the pipeline does)."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(one, urls))
    return time.perf_counter() - t0


def run_pandas(urls, backend, start, end) -> float:
    t0 = time.perf_counter()
    for url in urls:
        engine = create_engine(url)
        with engine.connect() as conn:
            df = pd.read_sql(
                text(
                    'SELECT "BillerId", "CreatedDate", "ResponseTime", "StatusCode" '
                    'FROM "DataPumpDetail" WHERE "CreatedDate" >= :s AND "CreatedDate" < :e'
                ),
                conn,
                params=_params(backend, start, end),
            )
        engine.dispose()
        df["hr"] = pd.to_datetime(df["CreatedDate"], format="mixed").dt.floor("h")
        s = df["StatusCode"].astype("string").str.strip()
        code = pd.to_numeric(s.where(s.str.fullmatch(r"[0-9]+").fillna(False)), errors="coerce")
        rt = df["ResponseTime"].astype(float)
        df["timeout"] = (
            code.isin([408, 504]) | s.str.lower().eq("timeout").fillna(False) | (rt >= 30000)
        )
        df["failed"] = df["timeout"] | ~code.between(200, 399)
        df["valid"] = rt.where(rt >= 0)
        g = df.groupby(["BillerId", "hr"])
        g.agg(
            n=("BillerId", "size"),
            failed=("failed", "sum"),
            timeout=("timeout", "sum"),
            total=("valid", "sum"),
            count=("valid", "count"),
        )
        g["valid"].quantile([0.5, 0.95, 0.99], interpolation="higher")
    return time.perf_counter() - t0


def materialize_command(start: datetime, end: datetime) -> list[str]:
    script = Path(sys.executable).parent / "metrics-pipeline"
    return [str(script), "materialize", "--start", start.isoformat(), "--end", end.isoformat()]


def materialize(env: dict, start: datetime, end: datetime) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(
        materialize_command(start, end),
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"materialize failed: {proc.stderr[-2000:]}")
    return elapsed


def count_events(home: str) -> dict:
    """Runs in the instance at ``home`` and the Dagster events each wrote (rows of its event
    log storage), with the events by type summed over the runs."""
    from dagster import DagsterInstance

    instance = DagsterInstance.from_config(home)
    try:
        per_run, by_type = [], {}
        for run in instance.get_runs():
            records = instance.all_logs(run.run_id)
            per_run.append(
                {"job": run.job_name, "status": run.status.value, "events": len(records)}
            )
            for r in records:
                t = r.dagster_event_type.value if r.dagster_event_type else "LOG"
                by_type[t] = by_type.get(t, 0) + 1
        return {
            "runs": len(per_run),
            "events": sum(r["events"] for r in per_run),
            "per_run": per_run,
            "by_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
        }
    finally:
        instance.dispose()


def setup(
    backend: str, billers: int, shards: int, days: int, per_hour: int, folder: Path, dbs: list
):
    if backend == "sqlite":
        env = {
            "METRICS_CATALOG_URL": f"sqlite:///{folder}/catalog.db",
            "METRICS_SHARD_URL_TEMPLATE": f"sqlite:///{folder}/{{shard}}.db",
        }
        warehouse = lambda i: f"sqlite:///{folder}/warehouse_{i}.db"  # noqa: E731
    else:
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        prefix = f"mpbench_{uuid.uuid4().hex[:6]}"
        base = PG_ADMIN.rsplit("/", 1)[0]

        def new_db(name):
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            dbs.append(name)
            return f"{base}/{name}"

        env = {"METRICS_CATALOG_URL": new_db(f"{prefix}_catalog")}
        for s in range(shards):
            new_db(f"{prefix}_bench_{s:02d}")
        env["METRICS_SHARD_URL_TEMPLATE"] = f"{base}/{prefix}_{{shard}}"
        warehouse = lambda i: new_db(f"{prefix}_wh_{i}")  # noqa: E731
    create_catalog(env["METRICS_CATALOG_URL"], billers, shards=shards)
    t0 = time.perf_counter()
    rows = create_shards(env["METRICS_SHARD_URL_TEMPLATE"], billers, shards, days, per_hour, END)
    print(f"  generated {rows} rows in {time.perf_counter() - t0:.0f}s", flush=True)
    # Shard URL -> its billers, from the same placement the generator used.
    placement: dict[str, list[int]] = {}
    for biller in range(1, billers + 1):
        url = env["METRICS_SHARD_URL_TEMPLATE"].replace("{shard}", shard_of(biller, shards))
        placement.setdefault(url, []).append(biller)
    return env, warehouse, placement, rows


def drop(dbs):
    if not dbs:
        return
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in dbs:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument("--billers", type=int, default=5)
    p.add_argument("--shards", type=int, default=5)
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--per-hour", type=int, default=3000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-memory-instance", action="store_true", help="skip the (am) reference")
    p.add_argument("--pandas", action="store_true", help="also time (c) pandas")
    p.add_argument(
        "--pg-instance",
        action="store_true",
        help="also time (ap): DAGSTER_HOME with PostgreSQL instance storage, as deployed",
    )
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    start = END - timedelta(days=args.days)
    shards_n = min(args.shards, args.billers)
    dbs: list[str] = []
    runs: dict[str, list[float]] = {k: [] for k in ("a", "ap", "am", "b", "b1", "b0", "c")}
    events, pg_events, loads = [], [], []
    with tempfile.TemporaryDirectory(prefix="mpbench_") as tmp:
        try:
            env, warehouse, shards, rows = setup(
                args.backend, args.billers, shards_n, args.days, args.per_hour, Path(tmp), dbs
            )
            urls = list(shards)
            parallel = min(4, len(urls))
            for i in range(args.repeat):
                loads.append(os.getloadavg()[0])
                run_env = {
                    **os.environ,
                    **env,
                    "METRICS_DATA_DIR": tmp,
                }
                run_env.pop("DAGSTER_HOME", None)
                # Baseline first, then the pipeline on the user's path, back to back.
                runs["b"].append(
                    run_sql(
                        urls,
                        args.backend,
                        [facts_sql(args.backend), percentiles_sql(args.backend)],
                        start,
                        END,
                        parallel,
                    )
                )
                home = str(Path(tmp) / f"dagster_home_{i}")
                runs["a"].append(
                    materialize(
                        {
                            **run_env,
                            "DAGSTER_HOME": home,
                            "METRICS_WAREHOUSE_URL": warehouse(f"p{i}"),
                        },
                        start,
                        END,
                    )
                )
                events.append(count_events(home))
                runs["b1"].append(run_pipeline_sql(shards, start, END, parallel))
                runs["b0"].append(
                    run_sql(urls, args.backend, [counts_sql(args.backend)], start, END, parallel)
                )
                if args.pg_instance:
                    pg_home = Path(tmp) / f"dagster_home_pg_{i}"
                    pg_home.mkdir()
                    (pg_home / "dagster.yaml").write_text(
                        "telemetry:\n  enabled: false\n" + pg_instance_storage(dbs)
                    )
                    runs["ap"].append(
                        materialize(
                            {
                                **run_env,
                                "DAGSTER_HOME": str(pg_home),
                                "METRICS_WAREHOUSE_URL": warehouse(f"g{i}"),
                            },
                            start,
                            END,
                        )
                    )
                    pg_events.append(count_events(str(pg_home)))
                if not args.no_memory_instance:
                    runs["am"].append(
                        materialize(
                            {**run_env, "METRICS_WAREHOUSE_URL": warehouse(f"m{i}")}, start, END
                        )
                    )
                if args.pandas:
                    runs["c"].append(run_pandas(urls, args.backend, start, END))
                print(
                    f"  run {i + 1} (load {loads[-1]:.1f}): materialize {runs['a'][-1]:.1f}s "
                    f"(DAGSTER_HOME, {events[-1]['events']} events in {events[-1]['runs']} runs), "
                    + (f"in-memory {runs['am'][-1]:.1f}s, " if runs["am"] else "")
                    + (f"PG instance {runs['ap'][-1]:.1f}s, " if runs["ap"] else "")
                    + f"SQL {runs['b'][-1]:.1f}s, pipeline SQL {runs['b1'][-1]:.1f}s, "
                    f"counts-only {runs['b0'][-1]:.1f}s",
                    flush=True,
                )
        finally:
            drop(dbs)
    med = {k: statistics.median(v) if v else None for k, v in runs.items()}
    # Each run's ratio to the baseline measured just before it, then the median of those.
    pair = statistics.median(a / b for a, b in zip(runs["a"], runs["b"], strict=True))
    result = {
        "backend": args.backend,
        "billers": args.billers,
        "shards": shards_n,
        "days": args.days,
        "per_hour": args.per_hour,
        "rows": rows,
        "repeat": args.repeat,
        "instance": "SQLite (DAGSTER_HOME set, Dagster's default local storage)",
        "partitions": args.days * 24 + args.days + math.ceil(args.days / 7),
        "load_average_1m": loads,
        "materialize_s": med["a"],
        "materialize_memory_instance_s": med["am"],
        "materialize_pg_instance_s": med["ap"],
        "sql_s": med["b"],
        "pipeline_sql_s": med["b1"],
        "counts_sql_s": med["b0"],
        "pandas_s": med["c"],
        "runs": {
            "materialize": runs["a"],
            "materialize_memory_instance": runs["am"],
            "materialize_pg_instance": runs["ap"],
            "sql": runs["b"],
            "pipeline_sql": runs["b1"],
            "counts_sql": runs["b0"],
            "pandas": runs["c"],
        },
        "events": events[-1],
        "events_pg_instance": pg_events[-1] if pg_events else None,
        "ratio_a_b": pair,
        "ratio_am_b": med["am"] / med["b"] if med["am"] else None,
        "ratio_ap_b": med["ap"] / med["b"] if med["ap"] else None,
        "ratio_a_b1": med["a"] / med["b1"],
        "rows_per_s": {k: rows / v for k, v in med.items() if v},
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    name = f"throughput_{args.backend}_{args.billers}b.json"
    (Path(args.out) / name).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k not in ("runs", "events")}, indent=2))
    return result


if __name__ == "__main__":
    main()
