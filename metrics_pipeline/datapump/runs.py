"""The DataPump family's plan -> run -> report: `metrics-pipeline materialize` and `refresh`
through Dagster on the instance in DAGSTER_HOME, with progress on stderr and a summary of what
each biller's hours hold. The CLI parses and dispatches; the other families have their own
runs.py."""

import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from metrics_pipeline.clock import utc_now
from metrics_pipeline.execution import EXIT_FAILED, EXIT_OK, EnvironmentFailure, UsageError
from metrics_pipeline.semantics import DAILY, HOURLY, LEVELS, WEEKLY, Level, hour_start, rollup

# --- progress -----------------------------------------------------------------------------------


class Progress:
    """Partitions done of total, rate and time left, on a terminal only (quiet in logs and CI)."""

    def __init__(self, total: int, stream):
        self.total, self.done, self.stream = total, 0, stream
        self.started = time.monotonic()
        self.live = stream.isatty() and not os.environ.get("CI")

    def advance(self, n: int, label: str) -> None:
        self.done += n
        if not self.live:
            return
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate else 0
        self.stream.write(
            f"\r{label:<7} {self.done}/{self.total} partitions  {rate:7.1f}/s  {left:5.0f}s left   "
        )
        self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")


# --- materialize: plan -> run -> report ---------------------------------------------------------


@dataclass(frozen=True)
class PlannedRun:
    """One run: a range of partitions of one level (first and last window start, inclusive)."""

    level: Level
    first: datetime
    last: datetime

    @property
    def windows(self) -> int:
        return int((self.last - self.first) / self.level.length) + 1


@dataclass(frozen=True)
class Plan:
    first: datetime
    stop: datetime
    runs: list[PlannedRun]

    def partitions(self, level: Level) -> int:
        return sum(r.windows for r in self.runs if r.level == level)


def plan_window(
    start: datetime, end: datetime, now: datetime, earliest: datetime, chunk_days: int = 7
) -> Plan:
    """The runs that materialize [start, end): widened to whole weeks, so every day and week the
    window touches is complete and exact, and cut at the running hour. Pure: no Dagster."""
    if start >= end:
        raise UsageError(f"--start {start.isoformat()} must be before --end {end.isoformat()}")
    if start < earliest:
        raise UsageError(
            f"--start must be on or after {earliest:%Y-%m-%d} (METRICS_PARTITIONS_START, the "
            "first partition)"
        )
    last_hour = hour_start(now)
    if start > last_hour:
        raise UsageError(f"--start {start.isoformat()} is in the future")
    if chunk_days < 1:
        raise UsageError(f"--chunk-days must be at least 1, got {chunk_days}")
    end = min(end, last_hour + HOURLY.length)  # nothing past the running hour exists yet
    first = max(WEEKLY.floor(start), earliest)
    stop = min(
        WEEKLY.floor(end - timedelta(microseconds=1)) + WEEKLY.length, last_hour + HOURLY.length
    )
    runs = []
    step = timedelta(days=max(1, chunk_days))
    chunk = first
    while chunk < stop:
        chunk_end = min(chunk + step, stop)
        runs.append(PlannedRun(HOURLY, chunk, chunk_end - HOURLY.length))
        chunk = chunk_end
    for level in (DAILY, WEEKLY):
        windows = level.starts(first, stop)
        runs.append(PlannedRun(level, max(windows[0], level.floor(earliest)), windows[-1]))
    return Plan(first, stop, runs)


@dataclass
class LevelResult:
    partitions: int = 0
    runs: int = 0
    errors: list[str] = field(default_factory=list)


#: Failures of a whole run that are the environment's, not some billers': exit code 2.
ENVIRONMENT_ERRORS = ("DatabaseUnreachable", "ConfigurationError")


def _step_error(result) -> str:
    from metrics_pipeline.execution import step_error

    message, kind = step_error(result)
    if kind in ENVIRONMENT_ERRORS:
        # The warehouse or a setting failed the whole run: nothing to name per biller.
        raise EnvironmentFailure(message)
    return message


def _definitions(environ: Mapping[str, str]) -> tuple:
    """The family's jobs with plain-valued resources, and those resources."""
    from dagster import Definitions

    from metrics_pipeline.datapump.definitions import build_datapump_definitions
    from metrics_pipeline.datapump.shards import datapump_resources
    from metrics_pipeline.resources import warehouse_resource

    resources = {
        "warehouse": warehouse_resource(environ, resolve=True),
        **datapump_resources(environ, resolve=True),
    }
    defs = Definitions.merge(build_datapump_definitions(environ), Definitions(resources=resources))
    return defs, resources


def materialize_window(
    start: datetime,
    end: datetime,
    biller_ids: list[int] | None,
    chunk_days: int = 7,
    environ=None,
    instance=None,
    out=None,
    err=None,
) -> int:

    from metrics_pipeline.datapump.pipeline import read_ahead
    from metrics_pipeline.datapump.refresh import range_tags
    from metrics_pipeline.execution import execute, lean_dagster_events, open_instance
    from metrics_pipeline.partitions import first_window
    from metrics_pipeline.tags import BILLERS_TAG

    environ, out, err, first_day = _command(environ, out, err)
    plan = plan_window(start, end, utc_now(), first_window(HOURLY, first_day), chunk_days)

    defs, resources = _definitions(environ)
    enabled = resources["catalog"].enabled_billers()
    resources["shards"].check_template({b.shard for b in enabled})
    known = {b.biller_id for b in enabled}
    if biller_ids is not None:
        unknown = sorted(set(biller_ids) - known)
        if unknown:
            raise UsageError(
                f"--billers: not enabled in the catalog: {', '.join(map(str, unknown))}"
            )
    selected = sorted(set(biller_ids) if biller_ids is not None else known)
    if not selected:
        raise UsageError("the catalog has no DataPump-enabled billers")
    resources["warehouse"].ensure_schema()
    hourly = [
        {b: HOURLY.starts(r.first, r.last + HOURLY.length) for b in selected}
        for r in plan.runs
        if r.level is HOURLY
    ]
    # The first run's shard reads start now, while the instance opens and the run starts.
    reading = read_ahead(
        hourly,
        resources["catalog"],
        resources["shards"],
        resources["warehouse"],
        # The hourly runs save first cursors unless they read some billers (metrics/billers).
        with_cursors=biller_ids is None,
    )
    with reading:
        instance = instance or open_instance(environ)
        extra = {BILLERS_TAG: ",".join(map(str, selected))} if biller_ids is not None else {}
        total = sum(r.windows for r in plan.runs)
        progress = Progress(total, err)
        results = {level.name: LevelResult() for level in LEVELS}
        findings = Findings()
        started = time.monotonic()
        with lean_dagster_events():
            for run in plan.runs:
                tags = {
                    **range_tags(run.level, first_day, run.first, run.last),
                    **extra,
                    "metrics/source": "cli",
                }
                result = execute(defs.resolve_job_def(run.level.job_name), instance, tags)
                res = results[run.level.name]
                res.runs += 1
                res.partitions += run.windows
                if not result.success:
                    res.errors.append(_step_error(result))
                if run.level is HOURLY:
                    findings.add(instance.get_run_by_id(result.run_id).tags)
                progress.advance(run.windows, run.level.name)
    progress.close()

    # The report reads the ledger, the one record of which biller-hours were written.
    gaps = _not_written(resources["warehouse"], selected, HOURLY.starts(plan.first, plan.stop))
    elapsed = time.monotonic() - started
    print_summary(out, resources["warehouse"], selected, plan, results, gaps, elapsed)
    return exit_code(gaps, [e for r in results.values() for e in r.errors], err, findings)


def refresh_cycle(environ=None, instance=None, out=None, err=None, now=None) -> int:
    """One refresh cycle, exactly what a schedule tick and its chain do: the hourly run (running
    hour, the hour just closed, and every cell with rows beyond its shard's cursor), then the
    daily and weekly runs of what it touched."""
    from metrics_pipeline.datapump.refresh import (
        ChangeSettings,
        decode_hours,
        refresh_hours,
        refresh_request,
    )
    from metrics_pipeline.execution import execute, lean_dagster_events, open_instance
    from metrics_pipeline.tags import CHANGES_TAG, TOUCHED_TAG

    environ, out, err, first_day = _command(environ, out, err)
    every = ChangeSettings.from_env(environ).refresh_minutes
    defs, resources = _definitions(environ)
    enabled = resources["catalog"].enabled_billers()
    resources["shards"].check_template({b.shard for b in enabled})
    billers = sorted(b.biller_id for b in enabled)
    if not billers:
        raise UsageError("the catalog has no DataPump-enabled billers")
    resources["warehouse"].ensure_schema()
    instance = instance or open_instance(environ)
    now = now or utc_now()
    refresh_id = f"cli-{now:%Y%m%dT%H%M%S}"
    hours = refresh_hours(now, every)
    started = time.monotonic()
    with lean_dagster_events():
        request = refresh_request(HOURLY, first_day, hours, refresh_id, {CHANGES_TAG: "true"})
        hourly = execute(
            defs.resolve_job_def(HOURLY.job_name),
            instance,
            {**request.tags, "metrics/source": "cli"},
        )
        tags = instance.get_run_by_id(hourly.run_id).tags
        touched = decode_hours(tags.get(TOUCHED_TAG, ""))
        errors = [] if hourly.success else [_step_error(hourly)]
        extra = {TOUCHED_TAG: tags[TOUCHED_TAG]} if TOUCHED_TAG in tags else {}
        for level in (DAILY, WEEKLY):
            request = refresh_request(level, first_day, hours, refresh_id, extra)
            result = execute(
                defs.resolve_job_def(level.job_name),
                instance,
                {**request.tags, "metrics/source": "cli"},
            )
            if not result.success:
                errors.append(_step_error(result))
    gaps = _not_written(resources["warehouse"], billers, sorted(set(hours) | set(touched)))
    waiting = _still_waiting(resources["warehouse"], billers, gaps, environ, first_day)
    out.write(
        f"\nRefresh {refresh_id}: {len(billers)} billers, hours "
        f"{hours[0]:%Y-%m-%d %H:%M} .. {hours[-1]:%H:%M} UTC"
        + (f" and {len(touched)} older hour(s) with late or changed rows" if touched else "")
        + f", 3 runs, {time.monotonic() - started:.1f}s\n"
    )
    if touched:
        out.write(f"  recomputed: {tags[TOUCHED_TAG]}\n")
    if waiting:
        left = sum(n for _, _, n in waiting.values())
        out.write(
            f"  still waiting: {left} busy or unreachable biller-hour(s) not read by this refresh "
            "(METRICS_REFRESH_HEAL_HOURS per refresh): run it again\n"
        )
    return exit_code({**gaps, **waiting}, errors, err)


def _still_waiting(warehouse, billers, gaps, environ, first_day) -> dict[int, tuple[str, str, int]]:
    """{BillerId: (states, why, hours)} of the billers not in ``gaps`` whose hours the ledger
    still holds busy or unreachable, however old (from the first partition on, as the refresh
    reads them): hours beyond what one refresh reads again (``METRICS_REFRESH_HEAL_HOURS``),
    which a refresh that exits 0 would leave unwritten."""
    from metrics_pipeline.coverage import DATAPUMP, RETRYABLE
    from metrics_pipeline.datapump.refresh import ChangeSettings
    from metrics_pipeline.partitions import first_window

    limit = ChangeSettings.from_env(environ).heal_hours_per_refresh
    since = first_window(HOURLY, first_day)
    out: dict[int, tuple[str, str, int]] = {}
    for entity, summary in warehouse.ledger_summary(
        DATAPUMP, HOURLY, RETRYABLE, since=since
    ).items():
        if not entity.isdigit() or int(entity) not in billers or int(entity) in gaps:
            continue
        why = (
            f"not read again by this refresh, the oldest {summary.oldest:%Y-%m-%d %H:00}; "
            f"a refresh reads at most {limit} such biller-hours: run it again"
        )
        out[int(entity)] = ("/".join(summary.states), why, summary.windows)
    return out


@dataclass
class Findings:
    """What the hourly runs found odd in the shards (their ``finding_tags``): rows in no hour
    per biller, and shards without a row of any of their billers in every run."""

    undated: dict[int, int] = field(default_factory=dict)
    empty_shards: dict[str, str] | None = None

    def add(self, tags) -> None:
        from metrics_pipeline.tags import EMPTY_SHARDS_TAG, UNDATED_TAG

        for item in filter(None, tags.get(UNDATED_TAG, "").split(",")):
            biller, rows = item.split(":")
            # Counted over all the shard's rows, not per window: the same in every run.
            self.undated[int(biller)] = max(self.undated.get(int(biller), 0), int(rows))
        empty = dict(
            item.split(":", 1) for item in filter(None, tags.get(EMPTY_SHARDS_TAG, "").split(";"))
        )
        self.empty_shards = (
            empty
            if self.empty_shards is None
            else {k: v for k, v in self.empty_shards.items() if k in empty}
        )

    def report(self, err) -> bool:
        """Write one line per finding; True when some rows were counted in no hour."""
        for shard, billers in sorted((self.empty_shards or {}).items()):
            err.write(
                f"metrics-pipeline: warning: shard {shard} has no row of its billers ({billers}) "
                "in the whole window: check its ShardName and METRICS_SHARD_URL_TEMPLATE\n"
            )
        for biller, rows in sorted(self.undated.items()):
            err.write(
                f"metrics-pipeline: biller {biller}: {rows} row(s) with a NULL or unreadable "
                "CreatedDate, counted in no hour\n"
            )
        return bool(self.undated)


def exit_code(gaps, errors: list[str], err, findings: "Findings | None" = None) -> int:
    """1 with one line per biller not written (or the first run error), or rows counted in no
    hour (a partial failure), else 0; shards without rows are a warning line."""
    undated = findings.report(err) if findings is not None else False
    if not gaps and not errors:
        return EXIT_FAILED if undated else EXIT_OK
    for biller, (state, why, hours) in sorted(gaps.items()):
        err.write(
            f"metrics-pipeline: biller {biller}: {hours} hour(s) not written ({state}: {why})\n"
        )
    if not gaps:
        err.write(f"metrics-pipeline: {errors[0]}\n")
    return EXIT_FAILED


def _not_written(warehouse, billers: list[int], hours) -> dict[int, tuple[str, str, int]]:
    """{BillerId: (state, reason, hours)} of the selected billers with hours not written."""
    from metrics_pipeline.coverage import DATAPUMP, judge

    hours = sorted(hours)
    ledger = warehouse.read_ledger_hours(DATAPUMP, HOURLY, hours)
    out: dict[int, tuple[str, str, int]] = {}
    for hour in hours:
        verdict = judge(hour, map(str, billers), ledger.get(hour, {}))
        for entity, (state, why) in verdict.gaps.items():
            _, _, n = out.get(int(entity), (state, why, 0))
            out[int(entity)] = (state, why, n + 1)
    return out


def print_summary(out, warehouse, billers, plan: Plan, results, gaps, elapsed) -> None:
    out.write(
        f"\nWindow {plan.first:%Y-%m-%d %H:%M} .. {plan.stop:%Y-%m-%d %H:%M} UTC (whole weeks), "
        f"{len(billers)} billers, {elapsed:.1f}s\n"
    )
    for level in LEVELS:
        res = results[level.name]
        status = f", {len(res.errors)} run(s) FAILED" if res.errors else ""
        out.write(f"  {level.name:<7} {res.partitions:>6} partitions in {res.runs} runs{status}\n")
    if gaps:
        by_state: dict[str, list[int]] = {}
        for biller, (state, _, _) in sorted(gaps.items()):
            by_state.setdefault(state, []).append(biller)
        parts = "; ".join(f"{s}: {', '.join(map(str, b))}" for s, b in by_state.items())
        out.write(f"  not written: {len(gaps)} biller(s) ({parts})\n")
    partials = warehouse.read_partials(DAILY, billers, plan.first, plan.stop)
    expected = int((plan.stop - plan.first) / HOURLY.length)
    out.write(
        f"\n  {'Biller':>6} {'Hours':>11} {'Requests':>9} {'AvgMs':>8} {'P95Ms':>8} {'Error%':>7} "
        f"{'Timeout%':>8}\n"
    )
    for biller in billers:
        total = rollup(p for (b, _), p in partials.items() if b == biller)
        covered = sum(p.covered_hours for (b, _), p in partials.items() if b == biller)
        # A biller none of whose hours was read has no figure: "-", never 0 requests.
        requests = total.request_count if covered else None
        out.write(
            f"  {biller:>6} {f'{covered}/{expected}':>11} {_fmt(requests):>9} "
            f"{_fmt(total.avg_response_time):>8} {_fmt(total.percentile(95)):>8} "
            f"{_fmt(total.error_rate):>7} {_fmt(total.timeout_rate):>8}\n"
        )


def _fmt(value) -> str:
    return "-" if value is None else f"{value}"


def _command(environ, out, err):
    """A command's environment (the process's by default), its streams and the partitions' first
    day (a bad METRICS_PARTITIONS_START is bad input)."""
    from metrics_pipeline.partitions import partitions_start

    environ = os.environ if environ is None else environ
    try:
        first_day = partitions_start(environ)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return environ, out or sys.stdout, err or sys.stderr, first_day
