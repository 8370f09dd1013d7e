"""Refreshes driven by change (issue 11), on the path users take: `metrics-pipeline materialize`
over the history, then `metrics-pipeline refresh` cycles through a persistent SQLite Dagster
instance in DAGSTER_HOME. Loopback only (SQLite files in a temporary folder), bounded in time.

1. Nothing new, at 20 and at 200 billers: wall time of one cycle, statements sent to each shard
   for change detection (SQLAlchemy ``before_cursor_execute`` on every engine, cycle run
   in-process), runs launched, Dagster events written (event log rows of the cycle's runs).
2. One late row three weeks old in one shard: rows of each aggregate table whose UpdatedDate
   changed, outside the windows every cycle recomputes (the running hour(s), their day and week),
   per level; wall time against the idle cycles measured between them.
3. 1k, 100k and 1M new rows in recent closed hours of some billers: wall time of the refresh.

    python -m benchmarks.refresh_changes            # 20 and 200 billers on 100 shards
    python -m benchmarks.refresh_changes --quick    # 20 billers only, smaller volumes
"""

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine

from benchmarks.data import create_catalog, create_shards, shard_of
from metrics_pipeline.datapump.refresh import refresh_hours
from metrics_pipeline.semantics import DAILY, HOURLY, WEEKLY, hour_start
from metrics_pipeline.sql.warehouse import AGGREGATES, build_warehouse
from metrics_pipeline.tags import REFRESH_TAG

BIN = Path(sys.executable).parent
LEVEL_OF = {lvl.id: lvl for lvl in (HOURLY, DAILY, WEEKLY)}


def now_utc() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- statements seen by the shards --------------------------------------------------------------


class StatementCounter:
    """Every statement any SQLAlchemy engine of this process sends, by database file and by
    whether it came from change detection (detect_changes' pool threads are named changes_*)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()
        event.listen(Engine, "before_cursor_execute", self.before)
        event.listen(Engine, "after_cursor_execute", self.after)

    def reset(self):
        self.detect = Counter()
        self.other = Counter()
        self.seconds = defaultdict(float)
        self.texts: dict[str, str] = {}

    def _db(self, conn) -> str:
        return Path(conn.engine.url.database or "").stem

    def before(self, conn, cursor, statement, parameters, context, executemany):
        context._bench_started = time.perf_counter() if context is not None else None
        db = self._db(conn)
        changes = threading.current_thread().name.startswith("changes")
        with self.lock:
            (self.detect if changes else self.other)[db] += 1
            if changes:
                self.texts.setdefault(" ".join(statement.split())[:300], db)

    def after(self, conn, cursor, statement, parameters, context, executemany):
        started = getattr(context, "_bench_started", None)
        if started is None:
            return
        db = self._db(conn)
        kind = "detect" if threading.current_thread().name.startswith("changes") else "other"
        with self.lock:
            self.seconds[(kind, db.startswith("bench_"))] += time.perf_counter() - started

    def summary(self) -> dict:
        shards = {k: v for k, v in self.detect.items() if k.startswith("bench_")}
        per = sorted(shards.values())
        return {
            "shards_asked": len(shards),
            "detect_statements_per_shard": {
                "min": per[0] if per else 0,
                "max": per[-1] if per else 0,
                "total": sum(per),
            },
            "detect_statement_s_total": round(self.seconds[("detect", True)], 3),
            "other_shard_statements": sum(
                v for k, v in self.other.items() if k.startswith("bench_")
            ),
            "other_shard_statement_s": round(self.seconds[("other", True)], 3),
            # warehouse, catalog, and Dagster's own SQLite storage (runs, index, per-run logs)
            "other_statements": {
                "warehouse": self.other["warehouse"],
                "catalog": self.other["catalog"],
                "dagster_storage": sum(
                    v
                    for k, v in self.other.items()
                    if not k.startswith("bench_") and k not in ("warehouse", "catalog")
                ),
            },
            "non_shard_statement_s": round(self.seconds[("other", False)], 3),
        }


# --- the setup ----------------------------------------------------------------------------------


def environment(folder: Path, start_day: datetime) -> dict:
    return {
        "DAGSTER_HOME": str(folder / "home"),
        "METRICS_CATALOG_URL": f"sqlite:///{folder}/catalog.db",
        "METRICS_SHARD_URL_TEMPLATE": f"sqlite:///{folder}/{{shard}}.db",
        "METRICS_WAREHOUSE_URL": f"sqlite:///{folder}/warehouse.db",
        "METRICS_PARTITIONS_START": f"{start_day:%Y-%m-%d}",
    }


def environ(env: dict):
    from metrics_pipeline.execution import environment

    return environment(env)


def cli(env: dict, *args, timeout=900) -> tuple[float, str]:
    started = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "metrics-pipeline"), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(
            f"metrics-pipeline {' '.join(args)} exited {proc.returncode}: "
            f"{proc.stderr.strip()[-2000:]}"
        )
    return wall, proc.stdout


def setup(folder: Path, billers: int, shards: int, days: int, per_hour: int) -> dict:
    now = now_utc()
    end = hour_start(now) + timedelta(hours=1)
    start_day = (end - timedelta(days=days)).replace(hour=0)
    env = environment(folder, start_day)
    create_catalog(env["METRICS_CATALOG_URL"], billers, shards)
    t = time.monotonic()
    rows = create_shards(env["METRICS_SHARD_URL_TEMPLATE"], billers, shards, days, per_hour, end)
    made = time.monotonic() - t
    wall, out = cli(
        env,
        "materialize",
        "--start",
        f"{end - timedelta(days=days):%Y-%m-%dT%H:%M}",
        "--end",
        f"{end:%Y-%m-%dT%H:%M}",
    )
    return {
        "env": env,
        "history_rows": rows,
        "history_days": days,
        "shards_created_s": round(made, 1),
        "materialize_s": round(wall, 1),
        "materialize_load": load(),
        "materialize_summary": out.strip().splitlines()[-6:],
    }


# --- one cycle ----------------------------------------------------------------------------------


def dagster_instance(env):
    from dagster import DagsterInstance

    return DagsterInstance.from_config(env["DAGSTER_HOME"])


def cycle_runs(env, refresh_id: str) -> dict:
    from dagster import RunsFilter

    instance = dagster_instance(env)
    runs = instance.get_runs(filters=RunsFilter(tags={REFRESH_TAG: refresh_id}))
    events = Counter()
    per_run = []
    for run in runs:
        logs = instance.all_logs(run.run_id)
        kinds = Counter(e.dagster_event.event_type_value for e in logs if e.is_dagster_event)
        events.update(kinds)
        record = instance.get_run_record_by_id(run.run_id)
        per_run.append(
            {
                "level": run.tags.get("metrics/level"),
                "status": run.status.value,
                "events": len(logs),
                "run_s": round((record.end_time or 0) - (record.start_time or 0), 2),
                "partitions": run.tags.get("dagster/asset_partition_range_start", "")
                + ".."
                + run.tags.get("dagster/asset_partition_range_end", ""),
                "touched": run.tags.get("metrics/touched_hours", ""),
            }
        )
    instance.dispose()
    return {
        "runs": len(runs),
        "events": sum(r["events"] for r in per_run),
        "event_types": dict(sorted(events.items())),
        "per_run": sorted(per_run, key=lambda r: ["hourly", "daily", "weekly"].index(r["level"])),
    }


def in_process_cycle(env, counter: StatementCounter) -> dict:
    """`metrics-pipeline refresh` in this process, so that the shards' statements are counted."""
    import io

    from metrics_pipeline.datapump.runs import refresh_cycle

    counter.reset()
    phases.clear()
    out, err = io.StringIO(), io.StringIO()
    l0 = load()
    t0 = now_utc()
    started = time.monotonic()
    with environ(env):
        code = refresh_cycle(environ=os.environ, out=out, err=err)
    wall = time.monotonic() - started
    if code != 0:
        raise RuntimeError(f"refresh exited {code}: {err.getvalue().strip()}")
    refresh_id = out.getvalue().split("Refresh ", 1)[1].split(":", 1)[0]
    return {
        "mode": "in-process",
        "wall_s": round(wall, 2),
        "load": l0,
        "t0": t0,
        "t1": now_utc(),
        "refresh_id": refresh_id,
        "statements": counter.summary(),
        "phases_s": {k: round(v, 2) for k, v in phases.items()},
        **cycle_runs(env, refresh_id),
    }


#: Seconds spent in each phase of the in-process refresh_cycle (see timed_phases).
phases: dict[str, float] = defaultdict(float)


def timed_phases() -> None:
    """Time the phases of refresh_cycle (instance, definitions, each level's run): the module
    functions it looks up at call time are wrapped with a stopwatch; behaviour is unchanged."""
    import metrics_pipeline.cli as cli_module
    import metrics_pipeline.definitions as definitions_module
    import metrics_pipeline.execution as runs_module

    def timed(name, fn, key=None):
        def wrapper(*args, **kwargs):
            started = time.monotonic()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[key(*args) if key else name] += time.monotonic() - started

        return wrapper

    # refresh_cycle imports these from metrics_pipeline.execution when it is called.
    runs_module.open_instance = timed("open_instance", runs_module.open_instance)
    definitions_module.build_definitions = timed(
        "build_definitions", definitions_module.build_definitions
    )
    runs_module.execute = timed(
        "execute", runs_module.execute, key=lambda _j, _i, tags: f"run_{tags['metrics/level']}"
    )
    cli_module._not_written = timed("ledger_report", cli_module._not_written)


def command_cycle(env) -> dict:
    """`metrics-pipeline refresh` exactly as a user runs it (a new process)."""
    l0 = load()
    t0 = now_utc()
    wall, out = cli(env, "refresh", timeout=600)
    refresh_id = out.split("Refresh ", 1)[1].split(":", 1)[0]
    reported = float(out.rsplit(" runs, ", 1)[1].split("s", 1)[0])
    return {
        "mode": "command",
        "wall_s": round(wall, 2),
        "inside_s": reported,
        "load": l0,
        "t0": t0,
        "t1": now_utc(),
        "refresh_id": refresh_id,
        **cycle_runs(env, refresh_id),
    }


# --- rows before and after ----------------------------------------------------------------------


def snapshot(env) -> dict:
    tables = build_warehouse()
    engine = create_engine(env["METRICS_WAREHOUSE_URL"])
    out = {}
    with engine.connect() as conn:
        for agg in AGGREGATES:
            t = tables.table(agg)
            for r in conn.execute(
                select(t.c.BillerId, t.c.TimeStampTypeId, t.c.StartTime, t.c.UpdatedDate)
            ):
                out[(agg.table, r.BillerId, r.TimeStampTypeId, r.StartTime)] = r.UpdatedDate
    engine.dispose()
    return out


def changed_rows(before: dict, after: dict, t0: datetime, t1: datetime) -> dict:
    """Rows new or with a new UpdatedDate, per table and level; 'outside' excludes the windows
    every cycle recomputes (the refresh hours of t0 and t1, their days and weeks)."""
    hours = set(refresh_hours(t0, 30)) | set(refresh_hours(t1, 30))
    result: dict = {}
    for key, updated in after.items():
        if before.get(key) == updated:
            continue
        table, biller, type_id, start = key
        lvl = LEVEL_OF[type_id]
        inside = any(start <= h < start + lvl.length for h in hours)
        slot = result.setdefault(table, {}).setdefault("window" if inside else "outside", Counter())
        slot[lvl.name] += 1
        if not inside:
            result[table].setdefault("outside_rows", []).append(
                f"{biller} {lvl.name} {start:%Y-%m-%d %H:%M}"
            )
    return {
        t: {k: (dict(v) if isinstance(v, Counter) else v) for k, v in d.items()}
        for t, d in result.items()
    }


# --- new rows in the shards ---------------------------------------------------------------------


def insert_rows(env, rows: list[tuple[int, datetime]], shards: int) -> None:
    """Rows (biller, CreatedDate) appended to their shards with the driver's bulk path (Ids
    beyond every cursor, as new calls get them)."""
    by_shard = defaultdict(list)
    rng = np.random.default_rng(len(rows))
    rt = np.round(rng.lognormal(np.log(120), 0.6, len(rows)), 2)
    for i, (biller, created) in enumerate(rows):
        by_shard[shard_of(biller, shards)].append(
            (biller, created.strftime("%Y-%m-%d %H:%M:%S.%f"), float(rt[i]), "200")
        )
    template = env["METRICS_SHARD_URL_TEMPLATE"].removeprefix("sqlite:///")
    for shard, values in by_shard.items():
        con = sqlite3.connect(template.replace("{shard}", shard))
        con.executemany(
            'INSERT INTO "DataPumpDetail" ("BillerId", "CreatedDate", "ResponseTime", '
            '"StatusCode") VALUES (?, ?, ?, ?)',
            values,
        )
        con.commit()
        con.close()


def recent_rows(n: int, billers: list[int], hours: int) -> list[tuple[int, datetime]]:
    """n rows spread evenly over the last ``hours`` closed hours of ``billers``."""
    last_closed = hour_start(now_utc()) - timedelta(hours=1)
    rng = np.random.default_rng(n)
    offsets = rng.integers(0, hours * 3_600_000, n)
    who = rng.choice(billers, n)
    first = last_closed - timedelta(hours=hours - 1)
    return [(int(who[i]), first + timedelta(milliseconds=int(offsets[i]))) for i in range(n)]


# --- the scenarios ------------------------------------------------------------------------------


def idle(env, counter, repeat: int, label: str) -> dict:
    cycles = []
    for _ in range(repeat):
        cycles.append(in_process_cycle(env, counter))
        print(
            f"  {label} idle (in-process): {cycles[-1]['wall_s']:.1f}s, "
            f"{cycles[-1]['runs']} runs, {cycles[-1]['events']} events, "
            f"detect {cycles[-1]['statements']['detect_statements_per_shard']}, "
            f"load {cycles[-1]['load'][0]}",
            flush=True,
        )
    return {"median_wall_s": statistics.median(c["wall_s"] for c in cycles), "cycles": cycles}


def late_rows(env, counter, repeat: int, shards: int, billers: int) -> dict:
    """Idle and late cycles alternated (the same load for both); one late row each time, three
    weeks old, in another biller and hour."""
    pairs = []
    for i in range(repeat):
        quiet = in_process_cycle(env, counter)
        biller = 1 + (i * 37) % billers
        created = hour_start(now_utc()) - timedelta(days=21, hours=i * 5) + timedelta(minutes=17)
        before = snapshot(env)
        insert_rows(env, [(biller, created)], shards)
        late = in_process_cycle(env, counter)
        after = snapshot(env)
        late["late_row"] = (
            f"biller {biller} at {created:%Y-%m-%d %H:%M} in {shard_of(biller, shards)}"
        )
        late["changed"] = changed_rows(before, after, late["t0"], late["t1"])
        cmd = None
        if i == 0:
            # The same through the command, as a user runs it.
            biller2 = 1 + (i * 37 + 11) % billers
            created2 = created - timedelta(days=1)
            before = snapshot(env)
            insert_rows(env, [(biller2, created2)], shards)
            cmd = command_cycle(env)
            cmd["late_row"] = f"biller {biller2} at {created2:%Y-%m-%d %H:%M}"
            cmd["changed"] = changed_rows(before, snapshot(env), cmd["t0"], cmd["t1"])
        pairs.append({"idle": quiet, "late": late, "late_command": cmd})
        print(
            f"  late row {i + 1}: idle {quiet['wall_s']:.1f}s, late {late['wall_s']:.1f}s, "
            f"changed outside {[(t, d.get('outside')) for t, d in late['changed'].items()]}, "
            f"load {late['load'][0]}",
            flush=True,
        )
    return {
        "median_idle_s": statistics.median(p["idle"]["wall_s"] for p in pairs),
        "median_late_s": statistics.median(p["late"]["wall_s"] for p in pairs),
        "pairs": pairs,
    }


def volumes(env, counter, sizes: list[int], billers: list[int], hours: int) -> dict:
    out = {}
    for n in sizes:
        t = time.monotonic()
        insert_rows(env, recent_rows(n, billers, hours), max_shards(env))
        inserted = time.monotonic() - t
        c = in_process_cycle(env, counter)
        c["inserted_s"] = round(inserted, 1)
        out[str(n)] = c
        print(
            f"  {n} new rows: refresh {c['wall_s']:.1f}s "
            f"(shard statements {c['statements']['other_shard_statement_s']}s, "
            f"detect {c['statements']['detect_statement_s_total']}s), load {c['load'][0]}",
            flush=True,
        )
    return out


def daemon_cycles(env, shards: int, billers: int, count: int, timeout: float) -> dict:
    """The real dagster-daemon on the same instance: the refresh schedule (every minute) and its
    chain sensor. One scheduled cycle with nothing new, then one after a late row: wall time from
    the hourly run's creation to the weekly run's end, runs, events."""
    from dagster import DagsterRunStatus, RunsFilter

    from benchmarks.daemon import Daemon

    denv = {
        **env,
        "METRICS_REFRESH_MINUTES": "1",
        "METRICS_SENSOR_INTERVAL_S": "2",
        "METRICS_BACKLOG_LOOKBACK_HOURS": "0",  # the refresh alone
    }
    home = Path(env["DAGSTER_HOME"])
    daemon = Daemon(
        home,
        denv,
        "run_coordinator:\n  module: dagster.core.run_coordinator\n"
        "  class: QueuedRunCoordinator\n  config:\n    dequeue_interval_seconds: 1\n",
    )
    instance = dagster_instance(env)
    out = []
    daemon.start()
    try:
        seen: set[str] = set()
        for i in range(count):
            if i == count - 1:
                created = hour_start(now_utc()) - timedelta(days=21, hours=3, minutes=-29)
                insert_rows(env, [(billers // 2, created)], shards)
            before = snapshot(env)
            l0 = load()

            def next_hourly():
                runs = instance.get_runs(filters=RunsFilter(tags={"metrics/level": "hourly"}))
                return [
                    r
                    for r in runs
                    if r.tags.get("dagster/schedule_name") == "refresh_schedule"
                    and r.tags[REFRESH_TAG] not in seen
                ]

            [*_, hourly] = daemon.wait("a scheduled refresh", next_hourly, timeout)
            refresh_id = hourly.tags[REFRESH_TAG]
            seen.add(refresh_id)

            def weekly_done(refresh_id=refresh_id):
                return instance.get_runs(
                    filters=RunsFilter(
                        tags={REFRESH_TAG: refresh_id, "metrics/level": "weekly"},
                        statuses=[DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE],
                    )
                )

            [weekly] = daemon.wait("the weekly run of that refresh", weekly_done, timeout)
            first = instance.get_run_record_by_id(hourly.run_id)
            last = instance.get_run_record_by_id(weekly.run_id)
            t1 = now_utc()
            c = {
                "late_row": i == count - 1,
                "wall_s": round(last.end_time - first.create_timestamp.timestamp(), 2),
                "load": l0,
                "refresh_id": refresh_id,
                **cycle_runs(env, refresh_id),
            }
            c["changed"] = changed_rows(
                before, snapshot(env), first.create_timestamp.replace(tzinfo=None), t1
            )
            out.append(c)
            print(
                f"  daemon cycle {i + 1}{' (late row)' if c['late_row'] else ''}: "
                f"{c['wall_s']:.1f}s, {c['runs']} runs, {c['events']} events, "
                f"load {l0[0]}",
                flush=True,
            )
            # Seen: this tick's refresh. Skip the ticks that fired while it ran.
            for r in next_hourly():
                seen.add(r.tags[REFRESH_TAG])
    finally:
        daemon.stop()
        instance.dispose()
    return {"cycles": out}


_SHARDS: dict[str, int] = {}


def max_shards(env) -> int:
    return _SHARDS[env["METRICS_CATALOG_URL"]]


def run_set(billers, shards, days, per_hour, repeat, folder, counter, full, daemon) -> dict:
    print(f"{billers} billers on {shards} shards, {days} days:", flush=True)
    s = setup(folder, billers, shards, days, per_hour)
    env = s.pop("env")
    _SHARDS[env["METRICS_CATALOG_URL"]] = shards
    print(f"  materialize {s['materialize_s']}s (load {s['materialize_load'][0]})", flush=True)
    result = {"billers": billers, "shards": shards, **s}
    if daemon == "only":
        # A fresh instance that has seen no command cycles (the chain sensor would chain them).
        result["daemon"] = daemon_cycles(env, shards, billers, 2, 300)
        return result
    result["idle"] = idle(env, counter, repeat, f"{billers} billers")
    cmd = command_cycle(env)
    result["idle_command"] = cmd
    print(
        f"  idle (command): {cmd['wall_s']:.1f}s ({cmd['inside_s']}s inside), "
        f"{cmd['runs']} runs, {cmd['events']} events, load {cmd['load'][0]}",
        flush=True,
    )
    if full:
        result["late"] = late_rows(env, counter, repeat, shards, billers)
        result["volumes"] = volumes(env, counter, full, list(range(1, 21)), 6)
        if daemon:
            try:
                result["daemon"] = daemon_cycles(env, shards, billers, 2, 240)
            except (TimeoutError, RuntimeError) as exc:
                result["daemon"] = {"error": str(exc)[:2000]}
                print(f"  daemon: {exc}", flush=True)
    return result


def jsonable(value):
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return value


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--billers", type=int, nargs="+", default=[20, 200])
    p.add_argument("--shards", type=int, default=100)
    p.add_argument("--days", type=int, default=23, help="history (must reach 3 weeks back)")
    p.add_argument("--per-hour", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--volumes", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--daemon", action="store_true", help="also cycles of the real daemon")
    p.add_argument(
        "--daemon-only", action="store_true", help="only the daemon's cycles, on a fresh instance"
    )
    p.add_argument("--out", default="benchmarks/results/refresh_changes.json")
    args = p.parse_args(argv)
    if args.quick:
        args.billers, args.volumes, args.repeat = [20], [1_000, 10_000], 1
    from metrics_pipeline.cli import _quiet_dagster_warnings

    _quiet_dagster_warnings()
    counter = StatementCounter()
    timed_phases()
    result = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "date": now_utc().isoformat(timespec="seconds"),
        "command": "python -m benchmarks.refresh_changes " + " ".join(argv or sys.argv[1:]),
        "load_start": load(),
        "sets": {},
    }
    for n in args.billers:
        with tempfile.TemporaryDirectory(prefix="mprefchg_", ignore_cleanup_errors=True) as tmp:
            full = args.volumes if n == max(args.billers) else None
            result["sets"][str(n)] = run_set(
                n,
                min(args.shards, n),
                args.days,
                args.per_hour,
                args.repeat,
                Path(tmp),
                counter,
                full,
                "only" if args.daemon_only else args.daemon,
            )
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(jsonable(result), indent=2))
    result["load_end"] = load()
    Path(args.out).write_text(json.dumps(jsonable(result), indent=2))
    return result


if __name__ == "__main__":
    main()
