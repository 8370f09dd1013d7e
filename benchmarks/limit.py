"""The limit: the fastest statement a shard can run for what the pipeline computes, on the data as
stored, beside the pipeline's own shard statements and (``--materialize``) the user's paths.

What a competent engineer would hand-write for the seed aggregates per biller and hour (request
count, failures, timeouts, response-time sum and count) plus the exact hourly percentiles
(ROW_NUMBER), knowing how the shard stores its timestamps: for SQLite text of one known form the
hour is ``substr(CreatedDate, 1, 13)`` and the window a text range, never a date function; for
PostgreSQL ``date_trunc``. Each statement set runs one shard after another and in parallel
threads; the limit is the faster of the two.

Storage forms (the generator writes the first; the others are copies in another form):
  sqlalchemy6   ``2026-11-08 00:00:00.123456``, index (BillerId, CreatedDate)
  text3         ``2026-11-08 00:00:00.123``, an index on CreatedDate only
  t_nofraction  ``2026-11-08T00:00:00``, index (BillerId, CreatedDate)
  postgresql    ``timestamp``, index (BillerId, CreatedDate)

    python -m benchmarks.limit --billers 5 --days 14 --per-hour 3000 --materialize
    python -m benchmarks.limit --billers 50 --days 14 --per-hour 300 --materialize
"""

import argparse
import functools
import json
import os
import sqlite3
import statistics
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

from benchmarks.daemon import pg_instance_storage
from benchmarks.throughput import (
    END,
    _timed_per_shard,
    count_events,
    drop,
    materialize,
    run_pipeline_sql,
    setup,
)

SQLITE_FORMS = {
    # form: (SQL turning the generator's text into the form, strftime of a bound, index columns)
    "sqlalchemy6": (None, "%Y-%m-%d %H:%M:%S.%f", '"BillerId", "CreatedDate"'),
    "text3": ('substr("CreatedDate", 1, 23)', "%Y-%m-%d %H:%M:%S.000", '"CreatedDate"'),
    "t_nofraction": (
        "replace(substr(\"CreatedDate\", 1, 19), ' ', 'T')",
        "%Y-%m-%dT%H:%M:%S",
        '"BillerId", "CreatedDate"',
    ),
}

RAW, STATUS = '"StatusCode"', 'trim("StatusCode")'
#: The pipeline's rules (semantics.DEFAULT_RULES), written out for text status codes: a code of
#: three plain digits (nearly every call) is compared as the text it is stored as; only the
#: others are trimmed and read as a number.
_THREE = {
    "sqlite": f"{RAW} GLOB '[1-9][0-9][0-9]'",
    "postgresql": f"{RAW} ~ '^[1-9][0-9][0-9]$'",
}
_DIGITS = {
    "sqlite": f"{STATUS} <> '' AND {STATUS} NOT GLOB '*[^0-9]*'",
    "postgresql": f"{STATUS} ~ '^[0-9]+$'",
}


def _status_class(backend: str) -> str:
    """2 a timeout, 1 another failure, 0 a success."""
    code = f"(CASE WHEN {_DIGITS[backend]} THEN CAST({STATUS} AS BIGINT) END)"
    return f"""CASE WHEN "ResponseTime" >= 30000 THEN 2
            WHEN {_THREE[backend]} THEN (CASE WHEN {RAW} IN ('408', '504') THEN 2
                WHEN {RAW} BETWEEN '200' AND '399' THEN 0 ELSE 1 END)
            WHEN {code} IN (408, 504) OR lower({STATUS}) = 'timeout' THEN 2
            WHEN {code} BETWEEN 200 AND 399 THEN 0 ELSE 1 END"""


def limit_statements(backend: str) -> list[str]:
    """The hand-written statements: seed aggregates per (biller, hour), exact percentiles."""
    hour = (
        'substr("CreatedDate", 1, 13)'
        if backend == "sqlite"
        else "date_trunc('hour', \"CreatedDate\")"
    )
    facts = f"""
        SELECT "BillerId", hr, COUNT(*), SUM(CASE WHEN c = 2 THEN 1 ELSE 0 END),
               SUM(CASE WHEN c = 0 THEN 0 ELSE 1 END), COUNT(rt), SUM(rt)
        FROM (SELECT "BillerId", {hour} AS hr, {_status_class(backend)} AS c,
                     CASE WHEN "ResponseTime" >= 0 THEN "ResponseTime" END AS rt
              FROM "DataPumpDetail" WHERE "CreatedDate" >= :s AND "CreatedDate" < :e) x
        GROUP BY "BillerId", hr"""
    percentiles = f"""
        SELECT "BillerId", hr, rn, n, "ResponseTime" FROM (
            SELECT "BillerId", {hour} AS hr, "ResponseTime",
                   ROW_NUMBER() OVER (PARTITION BY "BillerId", {hour} ORDER BY "ResponseTime") AS rn,
                   COUNT(*) OVER (PARTITION BY "BillerId", {hour}) AS n
            FROM "DataPumpDetail"
            WHERE "CreatedDate" >= :s AND "CreatedDate" < :e AND "ResponseTime" >= 0) x
        WHERE rn IN ((50 * n + 99) / 100, (90 * n + 99) / 100, (95 * n + 99) / 100,
                     (99 * n + 99) / 100)"""
    return [facts, percentiles]


def convert(src: str, dst: str, form: str) -> None:
    """A copy of the SQLite shard ``src`` with its timestamps in ``form``."""
    expr, _, index = SQLITE_FORMS[form]
    Path(dst).unlink(missing_ok=True)
    con = sqlite3.connect(dst)
    con.execute("ATTACH DATABASE ? AS src", (src,))
    for table in ("BillerDataPump",):
        con.execute(f'CREATE TABLE "{table}" AS SELECT * FROM src."{table}"')
    con.execute(
        'CREATE TABLE "DataPumpDetail" ("Id" INTEGER PRIMARY KEY, "BillerId" INTEGER NOT NULL, '
        '"CreatedDate" VARCHAR, "ResponseTime" FLOAT, "StatusCode" VARCHAR(10))'
    )
    con.execute(
        'INSERT INTO "DataPumpDetail" ("BillerId", "CreatedDate", "ResponseTime", '
        f'"StatusCode") SELECT "BillerId", {expr}, "ResponseTime", "StatusCode" '
        'FROM src."DataPumpDetail"'
    )
    con.execute(f'CREATE INDEX "IX_DataPumpDetail_{form}" ON "DataPumpDetail" ({index})')
    con.commit()
    con.close()


def time_statements(urls, statements, params, parallel: int) -> float:
    def one(url):
        engine = create_engine(url)
        with engine.connect() as conn:
            for stmt in statements:
                conn.execute(text(stmt), params).fetchall()
        engine.dispose()

    return _timed_per_shard(one, urls, parallel)


def best_of(fn, repeat: int) -> dict:
    """Sequential and parallel medians of ``fn(parallel)``; ``best`` is the faster."""
    seq = statistics.median(fn(1) for _ in range(repeat))
    par = statistics.median(fn(4) for _ in range(repeat))
    return {
        "sequential_s": round(seq, 2),
        "parallel_s": round(par, 2),
        "best_s": round(min(seq, par), 2),
    }


def volume_parser(doc: str) -> argparse.ArgumentParser:
    """The data's volume, as every benchmark of the shards takes it."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--billers", type=int, default=5)
    p.add_argument("--shards", type=int, default=5)
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--per-hour", type=int, default=3000)
    return p


def main(argv=None) -> dict:
    p = volume_parser(__doc__)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--forms", default="sqlalchemy6,text3,t_nofraction,postgresql")
    p.add_argument("--materialize", action="store_true", help="also time the user's paths")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    start, end = END - timedelta(days=args.days), END
    results: dict = {
        "machine": os.uname().nodename,
        "date": f"{datetime.now():%Y-%m-%d}",
        "args": vars(args),
        "forms": {},
    }
    forms = args.forms.split(",")
    with tempfile.TemporaryDirectory(prefix="mp-limit-") as tmp:
        folder = Path(tmp)
        dbs: list[str] = []
        try:
            base = {}
            if any(f != "postgresql" for f in forms):
                base["sqlite"] = setup(
                    "sqlite", args.billers, args.shards, args.days, args.per_hour, folder, dbs
                )
            if "postgresql" in forms:
                base["postgresql"] = setup(
                    "postgresql",
                    args.billers,
                    args.shards,
                    args.days,
                    args.per_hour,
                    folder / "pg",
                    dbs,
                )
            for form in forms:
                backend = "postgresql" if form == "postgresql" else "sqlite"
                env, warehouse, placement, rows = base[backend]
                warehouse = functools.cache(warehouse)  # the same database for the same name
                env = dict(env)
                if backend == "sqlite" and form != "sqlalchemy6":
                    template = f"sqlite:///{folder}/{form}_{{shard}}.db"
                    moved = {}
                    for url, billers in placement.items():
                        name = url.rsplit("/", 1)[1].removesuffix(".db")
                        convert(url.removeprefix("sqlite:///"), f"{folder}/{form}_{name}.db", form)
                        moved[template.replace("{shard}", name)] = billers
                    env["METRICS_SHARD_URL_TEMPLATE"], placement = template, moved
                if backend == "sqlite":
                    fmt = SQLITE_FORMS[form][1]
                    params = {"s": start.strftime(fmt), "e": end.strftime(fmt)}
                else:
                    params = {"s": start, "e": end}
                urls = list(placement)
                stmts = limit_statements(backend)
                entry = {
                    "rows": rows,
                    "limit": best_of(
                        lambda n, u=urls, q=stmts, b=params: time_statements(u, q, b, n),
                        args.repeat,
                    ),
                    "pipeline_statements": best_of(
                        lambda n, where=placement: run_pipeline_sql(where, start, end, n),
                        args.repeat,
                    ),
                }
                if args.materialize:
                    entry["paths"] = user_paths(
                        env, warehouse, folder / form, start, end, args.repeat, dbs
                    )
                    # The limit is no limit unless it computes what the pipeline wrote.
                    cells, ranks = same_figures(urls, stmts, params, warehouse("n0"), start, end)
                    entry["limit_cells_checked"] = cells
                    entry["limit_percentiles_checked"] = ranks
                    entry["ratio_to_limit"] = {
                        k: round(v / entry["limit"]["best_s"], 2)
                        for k, v in entry["paths"].items()
                        if isinstance(v, float)
                    }
                results["forms"][form] = entry
                print(form, json.dumps(entry), flush=True)
        finally:
            drop(dbs)
    name = f"limit_{args.billers}b.json"
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / name).write_text(json.dumps(results, indent=2) + "\n")
    return results


def _stored_percentiles(warehouse_url: str) -> dict:
    """{(biller, hour, q): the hourly P50/P95/P99 ``materialize`` wrote}."""
    engine = create_engine(warehouse_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                'SELECT "BillerId", "StartTime", "P50ResponseTime", "P95ResponseTime", '
                '"P99ResponseTime" FROM "DataPumpResponseTimeAggregation" '
                'WHERE "TimeStampTypeId" = 1'
            )
        ).all()
    engine.dispose()
    out = {}
    for biller, start, *values in rows:
        if not isinstance(start, datetime):  # SQLite returns text from a raw SELECT
            start = datetime.fromisoformat(start)
        for q, value in zip((50, 95, 99), values, strict=True):
            if value is not None:
                out[(int(biller), start.replace(tzinfo=None), q)] = float(value)
    return out


def _hour(value) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    return datetime.fromisoformat(str(value).replace("T", " ") + ":00")


def same_figures(
    urls, statements: list[str], params, warehouse_url: str, start, end
) -> tuple[int, int]:
    """The limit's facts and exact percentiles per (biller, hour) against the hourly rows
    ``materialize`` wrote in ``warehouse_url``: the same counts, the same response-time sum to
    the cent per call, the same P50, P95 and P99 to the cent. Raises when a cell differs;
    returns the cells and the percentiles compared."""
    from metrics_pipeline.resources.warehouse import WarehouseResource
    from metrics_pipeline.semantics import HOURLY

    facts, percentiles = statements
    limit, ranked = {}, {}
    for url in urls:
        engine = create_engine(url)
        with engine.connect() as conn:
            for biller, hour, n, timeouts, failed, valid, total in conn.execute(
                text(facts), params
            ):
                limit[(int(biller), _hour(hour))] = (n, timeouts, failed, valid, float(total or 0))
            for biller, hour, rn, n, rt in conn.execute(text(percentiles), params):
                for q in (50, 95, 99):
                    if (q * n + 99) // 100 == rn:
                        ranked[(int(biller), _hour(hour), q)] = float(rt)
        engine.dispose()
    stored_percentiles = _stored_percentiles(warehouse_url)
    for (biller, hour, q), value in ranked.items():
        got = stored_percentiles.get((biller, hour, q))
        if got is None or abs(got - value) > 0.005:
            raise AssertionError(f"P{q} differs at {(biller, hour)}: {got} vs {value}")
    stored = WarehouseResource(url=warehouse_url).read_partials(
        HOURLY, sorted({b for b, _ in limit}), start, end
    )
    for key, (n, timeouts, failed, valid, total) in limit.items():
        p = stored.get(key)
        got = None if p is None else (p.request_count, p.timeout_count, p.failed_count)
        if got != (n, timeouts, failed) or p.response_time_count != valid:
            raise AssertionError(f"the limit and the pipeline differ at {key}: {got} vs {n}")
        if abs(float(p.total_response_time) - total) > 0.01 * max(valid, 1):
            raise AssertionError(f"response-time sums differ at {key}")
    return len(limit), len(ranked)


def user_paths(env, warehouse, folder: Path, start, end, repeat: int, dbs: list) -> dict:
    """`metrics-pipeline materialize` over the window, on each path a user takes: no instance,
    DAGSTER_HOME with Dagster's SQLite instance (`make demo`), DAGSTER_HOME with PostgreSQL."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict = {}
    runs = {"none": [], "sqlite_instance": [], "postgresql_instance": []}
    for i in range(repeat):
        base = {**os.environ, **env}
        base.pop("DAGSTER_HOME", None)
        runs["none"].append(
            materialize({**base, "METRICS_WAREHOUSE_URL": warehouse(f"n{i}")}, start, end)
        )
        home = folder / f"home{i}"
        runs["sqlite_instance"].append(
            materialize(
                {**base, "METRICS_WAREHOUSE_URL": warehouse(f"s{i}"), "DAGSTER_HOME": str(home)},
                start,
                end,
            )
        )
        out["events_sqlite_instance"] = count_events(str(home))["events"]
        pg_home = folder / f"pghome{i}"
        pg_home.mkdir()
        (pg_home / "dagster.yaml").write_text(
            "telemetry:\n  enabled: false\n" + pg_instance_storage(dbs)
        )
        runs["postgresql_instance"].append(
            materialize(
                {**base, "METRICS_WAREHOUSE_URL": warehouse(f"p{i}"), "DAGSTER_HOME": str(pg_home)},
                start,
                end,
            )
        )
    for k, v in runs.items():
        out[k] = round(statistics.median(v), 2)
    return out


if __name__ == "__main__":
    main()
