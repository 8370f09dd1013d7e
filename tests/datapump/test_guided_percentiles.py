"""Exact hourly percentiles without ranking every call in a second statement. A SQLite shard
lists its calls' response times in the facts statement, and the sketch and the percentiles are
computed from them; a PostgreSQL (or SQL Server) shard's sketch says in which bucket each
percentile's call lies, and only those buckets' calls are ranked. The figures must be those of
ranking every call, with ties, zeros, invalid response times, text response times and the
SQLite fast path; and if a shard changes between its two statements, every call is ranked after
all."""

import sqlite3
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest
from sqlalchemy import Engine, MetaData, create_engine, event, insert

from metrics_pipeline.datapump.shards import ShardsResource
from metrics_pipeline.datapump.sql import ShardNames, detail_table, percentile_targets
from metrics_pipeline.semantics import (
    PERCENTILES,
    Partial,
    Sketch,
    nearest_rank,
    round2,
    sketch_bucket,
)

H = datetime(2025, 3, 3)
HOURS = 6


def calls(seed: int = 7) -> list[tuple[int, datetime, float | None, str]]:
    """Billers 1-3 over six hours, 0 to 900 calls an hour: lognormal times rounded to whole ms
    (many ties, within a bucket and across), zeros, negatives and NULLs (not valid)."""
    rng = np.random.default_rng(seed)
    rows = []
    for biller in (1, 2, 3):
        for h in range(HOURS):
            n = int(rng.choice([0, 1, 2, 3, 40, 900]))
            for i in range(n):
                created = H + timedelta(hours=h, seconds=int(rng.integers(0, 3600)))
                rt = float(round(rng.lognormal(5, 1.2)))
                pick = rng.random()
                rt = 0.0 if pick < 0.05 else -1.0 if pick < 0.08 else None if pick < 0.1 else rt
                rows.append((biller, created, rt, "200" if i % 7 else "500"))
    return rows


def exact(rows) -> dict[tuple[int, datetime], dict[int, Decimal | None]]:
    """Nearest-rank percentiles of each biller-hour's valid response times, ranked in Python."""
    times: dict = {}
    for biller, created, rt, _ in rows:
        key = (biller, created.replace(minute=0, second=0, microsecond=0))
        times.setdefault(key, [])
        if rt is not None and rt >= 0:
            times[key].append(rt)
    out = {}
    for key, values in times.items():
        values.sort()
        out[key] = {
            q: round2(values[nearest_rank(len(values), q) - 1]) if values else None
            for q in PERCENTILES
        }
    return out


def sketches(rows) -> dict[tuple[int, datetime], dict[int, int]]:
    """Each biller-hour's sketch counts, every valid time bucketed in Python."""
    out: dict = {}
    for biller, created, rt, _ in rows:
        counts = out.setdefault((biller, created.replace(minute=0, second=0, microsecond=0)), {})
        if rt is not None and rt >= 0:
            counts[sketch_bucket(rt)] = counts.get(sketch_bucket(rt), 0) + 1
    return out


def sqlite_shard(path, rows, created_text: bool, rt_text: bool) -> str:
    """A shard as another program writes it: timestamps as plain text (the fast path) or as
    SQLAlchemy writes them; ResponseTime as a number or as VARCHAR."""
    con = sqlite3.connect(path)
    rt_type = "VARCHAR(20)" if rt_text else "DECIMAL(10,2)"
    con.executescript(
        f"""CREATE TABLE DataPumpDetail (DataPumpDetailId INTEGER PRIMARY KEY,
            BillerId INT NOT NULL, CreatedDate DATETIME NULL, ResponseTime {rt_type} NULL,
            StatusCode VARCHAR(10) NULL);
        CREATE INDEX IX_Biller_Created ON DataPumpDetail (BillerId, CreatedDate);
        CREATE TABLE BillerDataPump (BillerId INT PRIMARY KEY, Processing BIT NOT NULL);"""
    )
    con.executemany("INSERT INTO BillerDataPump VALUES (?, 0)", [(1,), (2,), (3,)])
    con.executemany(
        "INSERT INTO DataPumpDetail (BillerId, CreatedDate, ResponseTime, StatusCode) "
        "VALUES (?, ?, ?, ?)",
        [
            (
                b,
                c.strftime("%Y-%m-%d %H:%M:%S") if created_text else c.isoformat(" "),
                (f" {rt:g}" if rt is not None else None) if rt_text else rt,
                s,
            )
            for b, c, rt, s in rows
        ],
    )
    con.commit()
    con.close()
    return f"sqlite:///{path}"


def pg_shard(url: str, rows) -> str:
    engine = create_engine(url)
    md = MetaData()
    md.create_all(engine, tables=[detail_table(ShardNames(), md)])
    with engine.begin() as conn:
        conn.execute(
            insert(detail_table(ShardNames())),
            [
                {"BillerId": b, "CreatedDate": c, "ResponseTime": rt, "StatusCode": s}
                for b, c, rt, s in rows
            ],
        )
    engine.dispose()
    return url


def read(url: str, on_statement=None) -> tuple[dict, list[str]]:
    """Every biller-hour of the window as the pipeline reads it, and the statements sent."""
    shards = ShardsResource(url_template=url)
    sent: list[str] = []

    def record(conn, cursor, statement, *args):
        sent.append(statement)
        if on_statement:
            on_statement(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        partials = {}
        for chunk in shards.read_hourly("s", [1, 2, 3], H, H + timedelta(hours=HOURS)):
            partials.update(chunk.partials)
    finally:
        event.remove(Engine, "before_cursor_execute", record)
        shards.teardown_after_execution(None)
    return partials, sent


def guided(statement: str) -> bool:
    return any(f in statement for f in ("json_each(", "json_to_recordset(", "OPENJSON("))


def ranked_whole(sent: list[str]) -> bool:
    """The statement that ranks every call of the window was sent."""
    return any("row_number()" in s.lower() and not guided(s) for s in sent)


@pytest.mark.parametrize(
    "form",
    [
        pytest.param("sqlite", id="sqlite, timestamps as SQLAlchemy writes them"),
        pytest.param("sqlite plain", id="sqlite, plain text timestamps (fast path)"),
        pytest.param("sqlite text rt", id="sqlite, ResponseTime as text"),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ],
)
def test_exact_percentiles_are_those_of_ranking_every_call(form, tmp_path, request):
    rows = calls()
    if form == "postgres":
        url = pg_shard(request.getfixturevalue("pg_databases").create(), rows)
    else:
        url = sqlite_shard(tmp_path / "s.db", rows, "plain" in form, "text" in form)
    partials, sent = read(url)
    want = exact(rows)
    assert set(partials) == set(want)
    assert {k: p.exact_percentiles for k, p in partials.items()} == want
    assert any(v is not None for w in want.values() for v in w.values())
    assert {k: p.sketch.counts for k, p in partials.items()} == sketches(rows)
    assert not ranked_whole(sent)
    if form == "postgres":
        # Answered by the bucket-guided statement.
        assert any(guided(s) for s in sent)
    else:
        # One statement per window: the facts, listing the calls' response times.
        assert not any(guided(s) for s in sent)
        assert all("quote(" in s for s in sent if "GROUP BY" in s)


@pytest.mark.parametrize("rt_text", [False, True], ids=["REAL", "text"])
def test_listed_response_times_keep_every_digit(rt_text, tmp_path):
    # A value as another program computes it: 17 significant digits, a hair below a half cent
    # (15 digits would read 0.125 and round up); 2.675 is the shortest form of its double.
    times = [2.675, 0.1, 0.12499999999999999]
    rows = [(1, H + timedelta(minutes=i), rt, "200") for i, rt in enumerate(times)]
    con = sqlite3.connect(tmp_path / "s.db")
    rt_type = "VARCHAR(30)" if rt_text else "FLOAT"
    con.executescript(
        f"""CREATE TABLE DataPumpDetail (DataPumpDetailId INTEGER PRIMARY KEY,
            BillerId INT NOT NULL, CreatedDate DATETIME NULL, ResponseTime {rt_type} NULL,
            StatusCode VARCHAR(10) NULL);
        CREATE TABLE BillerDataPump (BillerId INT PRIMARY KEY, Processing BIT NOT NULL);"""
    )
    con.executemany(
        "INSERT INTO DataPumpDetail (BillerId, CreatedDate, ResponseTime, StatusCode) "
        "VALUES (?, ?, ?, ?)",
        [(b, c.isoformat(" "), repr(rt) if rt_text else rt, s) for b, c, rt, s in rows],
    )
    con.commit()
    con.close()
    partials, _ = read(f"sqlite:///{tmp_path}/s.db")
    assert partials[(1, H)].exact_percentiles == exact(rows)[(1, H)]
    assert partials[(1, H)].exact_percentiles == dict(
        zip(PERCENTILES, map(Decimal, ("0.12", "2.68", "2.68")), strict=True)
    )


@pytest.mark.postgres
def test_a_shard_that_changes_between_the_statements_has_every_call_ranked(pg_databases):
    rows = calls(seed=11)
    url = pg_shard(pg_databases.create(), rows)
    # A late call lands in the bucket of the busiest hour's median after the facts were read.
    per_hour = Counter((b, c.replace(minute=0, second=0)) for b, c, _, _ in rows)
    busiest = max(per_hour, key=per_hour.__getitem__)
    median = float(exact(rows)[busiest][50])
    late = (busiest[0], busiest[1] + timedelta(minutes=30), median, "200")

    def insert_late(statement: str) -> None:
        if guided(statement) and late not in rows:
            rows.append(late)
            engine = create_engine(url)
            with engine.begin() as conn:
                conn.execute(
                    insert(detail_table(ShardNames())),
                    [
                        dict(
                            zip(
                                ("BillerId", "CreatedDate", "ResponseTime", "StatusCode"),
                                late,
                                strict=True,
                            )
                        )
                    ],
                )
            engine.dispose()

    partials, sent = read(url, insert_late)
    assert late in rows and ranked_whole(sent)
    # The figures of the shard as it is now, ranked whole; never a rank shifted by the late call.
    assert {k: p.exact_percentiles for k, p in partials.items()} == exact(rows)


def test_the_targets_are_the_buckets_where_the_ranks_fall():
    # Valid times: 2 in bucket 1, 3 in bucket 5, 1 in bucket 9 (n = 6): p50 is rank 3, the
    # first of bucket 5; p95 and p99 are rank 6, the one call of bucket 9.
    key = (4, H)
    p = Partial(response_time_count=6, sketch=Sketch({1: 2, 5: 3, 9: 1}))
    targets = percentile_targets({key: p}, {key: "2025-03-03 00"})
    assert targets == {
        (4, "2025-03-03 00", 5, 1): [(key, 50)],
        (4, "2025-03-03 00", 9, 1): [(key, 95), (key, 99)],
    }
    # A sketch that does not add up to the hour's valid times: no targets, every call ranked.
    p.response_time_count = 7
    assert percentile_targets({key: p}, {key: "2025-03-03 00"}) is None
    # An hour without a valid time needs none.
    assert percentile_targets({key: Partial()}, {key: H}) == {}


def test_a_shard_that_lists_its_calls_is_read_in_chunks_of_about_chunk_calls(tmp_path):
    # 2 billers, 10 calls an hour each, 40 an hour each from hour 12 on.
    rows = [
        (b, H + timedelta(hours=h, minutes=m), float(m + 1), "200")
        for b in (1, 2)
        for h in range(30)
        for m in range(10 if h < 12 else 40)
    ]
    url = sqlite_shard(tmp_path / "s.db", rows, created_text=True, rt_text=False)
    shards = ShardsResource(url_template=url, chunk_calls=120)
    chunks = list(shards.read_hourly("s", [1, 2], H, H + timedelta(hours=30)))
    shards.teardown_after_execution(None)
    hours = [int((c.end - c.start) / timedelta(hours=1)) for c in chunks]
    # A first chunk of a few hours learns the rate (10 per biller-hour): 120 calls are 6 hours
    # of 2 billers; after the first chunk that met 40 an hour, 1 hour (120 // 80).
    assert hours == [6, 6, 6] + [1] * 12
    calls = [sum(p.request_count for p in c.partials.values()) for c in chunks]
    assert calls == [120, 120, 480] + [80] * 12
    got = {k: p for c in chunks for k, p in c.partials.items()}
    assert sum(p.request_count for p in got.values()) == len(rows)
    assert {k: p.exact_percentiles for k, p in got.items()} == exact(rows)
