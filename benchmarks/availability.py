"""Availability benchmark: events/s through availability_minute for one hour of 1M events
(JSON Lines and Parquet), beside DuckDB's own GROUP BY applying the same filters to the same
files, and the peak RSS of one hour's run as the hour grows from 1M to 4M events.

    .venv/bin/python benchmarks/availability.py [--events 1000000] [--sizes 1,2,4] [--repeat 3]

Generated data lives in a temporary directory (removed at the end), never in the repository.
"""

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from metrics_pipeline.availability import duckdb_sql, pipeline
from metrics_pipeline.availability.settings import AvailabilitySettings

HOUR = datetime(2025, 3, 1, 10)
OMS = ["GetQuote", "PlaceOrder"]
FILES_PER_HOUR = 4

#: Events of one hour, generated inside DuckDB (deterministic: every field hashes the row number).
EVENTS_SQL = """
SELECT
  CASE WHEN i % 50 = 0 THEN NULL ELSE 'e' || CAST(i - CAST(i % 97 = 0 AS INT) AS VARCHAR) END
    AS eventId,
  strftime(TIMESTAMP '2025-03-01 10:00:00' + to_microseconds(CAST(hash(i, 1) % 3600000000 AS BIGINT)),
           '%Y-%m-%dT%H:%M:%S.%gZ') AS "time",
  CASE WHEN hash(i, 2) % 100 < 95 THEN 'Ms.Qos.IncomingServiceRequest' ELSE 'Other' END
    AS data_baseType,
  ['prod', 'prod', 'prod', 'prod', 'prod', 'prod', 'prod', 'prod-eu', 'int', ''][CAST(1 + hash(i, 3) % 10 AS BIGINT)]
    AS cloudEnvironment,
  CASE WHEN hash(i, 4) % 10 < 7 THEN struct_pack("ms.b.tel.scenario" := 'S' || CAST(hash(i, 5) % 6 AS VARCHAR),
                                                 "ms.b.tel.partner" := 'P' || CAST(hash(i, 6) % 20 AS VARCHAR))
  END AS cC,
  CASE WHEN hash(i, 4) % 10 IN (7, 8) THEN 'S' || CAST(hash(i, 5) % 6 AS VARCHAR) END AS ScScenario,
  CASE WHEN hash(i, 4) % 10 IN (7, 8) THEN 'P' || CAST(hash(i, 6) % 20 AS VARCHAR) END AS ScPartner,
  ['GetQuote', 'PlaceOrder', 'Other'][CAST(1 + hash(i, 7) % 3 AS BIGINT)] AS OperationName,
  'C' || CAST(hash(i, 8) % 5 AS VARCHAR) AS CallerName,
  ['GET', 'POST'][CAST(1 + hash(i, 9) % 2 AS BIGINT)] AS RequestType,
  'role-' || CAST(hash(i, 10) % 8 AS VARCHAR) AS RoleInstance,
  '5.1' AS SLLVersion,
  CASE WHEN hash(i, 11) % 50 = 0 THEN NULL ELSE round(CAST(hash(i, 12) % 400000 AS DOUBLE) / 1000, 3) END
    AS Latency,
  CASE WHEN hash(i, 13) % 100 < 2 THEN 500 ELSE CAST(hash(i, 14) % 4 AS BIGINT) END AS RequestStatus,
  NULL::VARCHAR AS testHeader,
  NULL::VARCHAR AS quoteIsTest,
  CASE WHEN hash(i, 15) % 100 < 2 THEN 'true' END AS isTest,
  'st' || CAST(hash(i, 16) % 3 AS VARCHAR) AS STID
FROM range({lo}, {hi}) t(i)
"""

#: DuckDB's own GROUP BY, written by hand from the seed's text (not generated from rules.py):
#: the same dedup, filters, fallbacks and measures, one statement, rows fetched to Python.
BASELINE_SQL = """
WITH src AS ({source}),
d AS (
  SELECT * FROM src WHERE coalesce(eventId, '') <> ''
  QUALIFY row_number() OVER (PARTITION BY eventId ORDER BY "time", data_baseType,
    cloudEnvironment, ScScenario, ScPartner, OperationName, CallerName, RequestType, RoleInstance,
    SLLVersion, Latency, RequestStatus, testHeader, quoteIsTest, isTest, STID, cc_scenario,
    cc_partner) = 1
  UNION ALL
  SELECT DISTINCT * FROM src WHERE coalesce(eventId, '') = ''
),
f AS (
  SELECT *, lower(cloudEnvironment) AS env,
    coalesce(nullif(cc_scenario, ''), nullif(ScScenario, ''),
             CASE WHEN OperationName IN ('GetQuote', 'PlaceOrder') THEN OperationName END) AS sid,
    TRY_CAST("time" AS TIMESTAMPTZ) AS ts
  FROM d
)
SELECT date_trunc('minute', ts) AS minute, sid,
  coalesce(nullif(cc_partner, ''), nullif(ScPartner, ''), nullif(CallerName, ''), '') AS pid,
  coalesce(RequestType, '') AS rt, coalesce(cloudEnvironment, '') AS ce, coalesce(STID, '') AS stid,
  count(*) AS total,
  count(*) FILTER (WHERE regexp_full_match(RequestStatus, '-[0-9]+|0*[0-4]')) AS ok,
  count(TRY_CAST(Latency AS DECIMAL(18, 3))) FILTER (WHERE TRY_CAST(Latency AS DOUBLE) >= 0) AS lat_n,
  sum(TRY_CAST(Latency AS DECIMAL(18, 3))) FILTER (WHERE TRY_CAST(Latency AS DOUBLE) >= 0) AS lat_sum
FROM f
WHERE ts >= TIMESTAMPTZ '2025-03-01 10:00:00+00' AND ts < TIMESTAMPTZ '2025-03-01 11:00:00+00'
  AND lower(data_baseType) IN ('ms.qos.incomingservicerequest', 'incomingservicerequest')
  AND (coalesce(env, '') = ''
       OR (env NOT IN ('dev', 'int', 'ppe', 'non-prod', 'nonprod', 'sandbox', 'perf', 'test')
           AND NOT (env LIKE '%-dev%' OR env LIKE '%-int%' OR env LIKE '%-ppe%'
                    OR env LIKE '%-sandbox%' OR env LIKE '%-perf%' OR env LIKE '%-test%'))
       OR (env LIKE '%prod%' AND env NOT LIKE '%non-prod%' AND env NOT LIKE '%nonprod%'))
  AND coalesce(testHeader, '') = ''
  AND (coalesce(quoteIsTest, '') = '' OR lower(quoteIsTest) <> 'true')
  AND (coalesce(isTest, '') = '' OR lower(isTest) <> 'true')
  AND sid IS NOT NULL
GROUP BY ALL
"""


def generate(folder: Path, events: int, fmt: str) -> list[Path]:
    """One hour of ``events`` in FILES_PER_HOUR files of ``fmt`` ('jsonl' or 'parquet')."""
    folder.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    files = []
    step = events // FILES_PER_HOUR
    for n in range(FILES_PER_HOUR):
        path = folder / f"part-{n}.{fmt}"
        option = "FORMAT json" if fmt == "jsonl" else "FORMAT parquet"
        sql = EVENTS_SQL.format(
            lo=n * step, hi=events if n == FILES_PER_HOUR - 1 else (n + 1) * step
        )
        con.execute(f"COPY ({sql}) TO '{path}' ({option})")
        files.append(path)
    con.close()
    return files


def baseline(files: list[Path]) -> tuple[float, int]:
    con = duckdb_sql.connect()
    if files[0].suffix == ".parquet":
        schema = dict(
            con.execute(
                f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet({[str(f) for f in files]}))"
            ).fetchall()
        )
        source = duckdb_sql.parquet_source(files, schema)
    else:
        source = duckdb_sql.json_source(files)
    t0 = time.perf_counter()
    rows = con.execute(BASELINE_SQL.format(source=source)).fetchall()
    elapsed = time.perf_counter() - t0
    con.close()
    return elapsed, sum(r[6] for r in rows)


def pipeline_aggregate(files: list[Path]) -> tuple[float, int]:
    con = duckdb_sql.connect()
    t0 = time.perf_counter()
    agg = duckdb_sql.aggregate_hour(con, files, HOUR, OMS)
    elapsed = time.perf_counter() - t0
    con.close()
    return elapsed, agg.kept


def asset_run(root: Path, warehouse: str) -> tuple[float, int]:
    """materialize_hour as availability_minute runs it: list, read, aggregate, write (SQLite)."""
    env = {"METRICS_WAREHOUSE_URL": warehouse, "METRICS_EVENTS_ROOT": str(root)}
    store = pipeline.open_store(env)
    store.write_reference([], [], OMS)
    settings = AvailabilitySettings.from_env(env)
    t0 = time.perf_counter()
    report = pipeline.materialize_hour(store, settings, HOUR)
    elapsed = time.perf_counter() - t0
    store.engine.dispose()
    return elapsed, report.kept


def rss_child(root: str, warehouse: str) -> None:
    """Child process: one hour through materialize_hour; prints its peak RSS (MB)."""
    elapsed, kept = asset_run(Path(root), warehouse)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"elapsed": elapsed, "kept": kept, "peak_mb": peak}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--sizes", default="1,2,4", help="millions of events for the RSS series")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="benchmarks/results/availability.json")
    args = parser.parse_args()
    if args.rss_child:
        rss_child(*args.rss_child)
        return
    tmp = Path(tempfile.mkdtemp(prefix="avail-bench-"))
    results: dict = {"events": args.events, "repeat": args.repeat, "formats": {}, "rss": []}
    try:
        for fmt in ("jsonl", "parquet"):
            root = tmp / fmt / "events"
            files = generate(root / "2025/03/01/10", args.events, fmt)
            # Interleaved, so that load from other processes hits all three alike.
            runs = {"b": [], "a": [], "w": []}
            for _ in range(args.repeat):
                runs["b"].append(baseline(files))
                runs["a"].append(pipeline_aggregate(files))
                runs["w"].append(asset_run(root, f"sqlite:///{tmp / fmt}-{time.time_ns()}.db"))
            (b, b_kept), (a, a_kept), (w, w_kept) = (
                (statistics.median(t for t, _ in runs[k]), runs[k][0][1]) for k in "baw"
            )
            assert a_kept == b_kept == w_kept, (a_kept, b_kept, w_kept)
            results["formats"][fmt] = {
                "bytes": sum(f.stat().st_size for f in files),
                "kept": a_kept,
                "baseline_s": b,
                "aggregate_s": a,
                "asset_s": w,
                "baseline_eps": args.events / b,
                "aggregate_eps": args.events / a,
                "asset_eps": args.events / w,
                "ratio_aggregate": a / b,
                "ratio_asset": w / b,
            }
            print(fmt, json.dumps(results["formats"][fmt]), flush=True)
            shutil.rmtree(tmp / fmt)
        for millions in [int(x) for x in args.sizes.split(",")]:
            root = tmp / f"rss{millions}" / "events"
            generate(root / "2025/03/01/10", millions * 1_000_000, "jsonl")
            out = (
                subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--rss-child",
                        str(root),
                        f"sqlite:///{tmp}/rss{millions}.db",
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            row = {"events": millions * 1_000_000, **json.loads(out)}
            results["rss"].append(row)
            print("rss", json.dumps(row), flush=True)
            shutil.rmtree(tmp / f"rss{millions}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["machine"] = (
        f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, DuckDB {duckdb.__version__}"
    )
    results["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
