"""The ``metrics-pipeline`` command: demo data, and headless materialization of a window.

Exit codes: 0 done; 1 some partitions failed (named on stderr); 2 bad input or a database that
cannot be reached (one line on stderr).
"""

import argparse
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from metrics_pipeline.clock import utc_now
from metrics_pipeline.resources.engines import ConfigurationError, DatabaseUnreachable
from metrics_pipeline.semantics import DAILY, HOURLY, LEVELS, WEEKLY, Level, hour_start, rollup
from metrics_pipeline.settings import port_number

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(ValueError):
    """Bad command-line input."""


class EnvironmentFailure(RuntimeError):
    """A run failed as a whole because a database or a setting failed (exit code 2)."""


# --- input parsing ------------------------------------------------------------------------------


def parse_time(text: str, what: str) -> datetime:
    """An ISO 8601 time as naive UTC (a time without offset is taken as UTC)."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{what}: not an ISO 8601 date or time: {text!r}") from None
    if value.tzinfo is not None:
        try:
            value = value.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            raise UsageError(f"{what}: out of the range of dates: {text!r}") from None
    return value


def parse_billers(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UsageError(f"--billers: expected comma-separated BillerIds, got {text!r}") from None


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

    from metrics_pipeline.definitions import build_definitions
    from metrics_pipeline.execution import execute, lean_dagster_events, open_instance
    from metrics_pipeline.partitions import first_window, partitions_start
    from metrics_pipeline.refresh import range_tags
    from metrics_pipeline.resources import build_resources
    from metrics_pipeline.tags import BILLERS_TAG

    environ = os.environ if environ is None else environ
    out, err = out or sys.stdout, err or sys.stderr
    try:
        first_day = partitions_start(environ)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    plan = plan_window(start, end, utc_now(), first_window(HOURLY, first_day), chunk_days)

    resources = build_resources(environ, resolve=True)
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

    instance = instance or open_instance(environ)
    defs = build_definitions(environ, resolve=True)
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
    return _exit_code(gaps, [e for r in results.values() for e in r.errors], err, findings)


def refresh_cycle(environ=None, instance=None, out=None, err=None, now=None) -> int:
    """One refresh cycle, exactly what a schedule tick and its chain do: the hourly run (running
    hour, the hour just closed, and every cell with rows beyond its shard's cursor), then the
    daily and weekly runs of what it touched."""
    from metrics_pipeline.definitions import build_definitions
    from metrics_pipeline.execution import execute, lean_dagster_events, open_instance
    from metrics_pipeline.partitions import partitions_start
    from metrics_pipeline.refresh import decode_hours, refresh_hours, refresh_request
    from metrics_pipeline.resources import build_resources
    from metrics_pipeline.tags import CHANGES_TAG, TOUCHED_TAG

    environ = os.environ if environ is None else environ
    out, err = out or sys.stdout, err or sys.stderr
    try:
        first_day = partitions_start(environ)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    every = int(environ.get("METRICS_REFRESH_MINUTES") or 30)
    resources = build_resources(environ, resolve=True)
    enabled = resources["catalog"].enabled_billers()
    resources["shards"].check_template({b.shard for b in enabled})
    billers = sorted(b.biller_id for b in enabled)
    if not billers:
        raise UsageError("the catalog has no DataPump-enabled billers")
    resources["warehouse"].ensure_schema()
    instance = instance or open_instance(environ)
    defs = build_definitions(environ, resolve=True)
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
    out.write(
        f"\nRefresh {refresh_id}: {len(billers)} billers, hours "
        f"{hours[0]:%Y-%m-%d %H:%M} .. {hours[-1]:%H:%M} UTC"
        + (f" and {len(touched)} older hour(s) with late or changed rows" if touched else "")
        + f", 3 runs, {time.monotonic() - started:.1f}s\n"
    )
    if touched:
        out.write(f"  recomputed: {tags[TOUCHED_TAG]}\n")
    return _exit_code(gaps, errors, err)


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


def _exit_code(gaps, errors: list[str], err, findings: "Findings | None" = None) -> int:
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


def _availability(what: str, environ, start=None, end=None) -> int:
    """The availability family's materialize (minute -> daily -> published) or refresh, as
    Dagster runs, with the same summary and exit codes."""
    from metrics_pipeline.availability.runs import materialize_availability, refresh_availability

    try:
        if what == "materialize":
            report = materialize_availability(start, end, environ)
        else:
            report = refresh_availability(environ)
    except ValueError as exc:
        raise UsageError(f"availability: {exc}") from None
    sys.stdout.write(report.summary() + "\n")
    if not report.success:
        sys.stderr.write(f"metrics-pipeline: availability: {report.errors[0]}\n")
        return EXIT_FAILED
    return EXIT_OK


def _collected(what: str, environ, start=None, end=None) -> int:
    """The collected-metrics family's materialize or refresh, with the same summary and codes."""
    from metrics_pipeline.collected.runs import materialize_collected, refresh_collected

    try:
        if what == "materialize":
            run = materialize_collected(start, end, environ=environ)
        else:
            run = refresh_collected(environ=environ)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not run.hours:
        sys.stdout.write("collected: nothing to refresh\n")
        return EXIT_OK
    sys.stdout.write(
        f"collected: {run.hours} hour(s) {run.first:%Y-%m-%d %H:%M} .. {run.last:%Y-%m-%d %H:%M} "
        f"UTC {'written' if run.success else 'FAILED'}\n"
    )
    if not run.success:
        sys.stderr.write(f"metrics-pipeline: collected: {run.error}\n")
        return EXIT_FAILED
    return EXIT_OK


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


# --- entry point --------------------------------------------------------------------------------


FAMILIES = ("datapump", "availability", "collected", "all")


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors as one line (and exit code 2) like every other error here."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"metrics-pipeline: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="metrics-pipeline",
        description="DataPump service-level metrics: demo data and headless materialization.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks (also METRICS_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    demo = sub.add_parser("demo-data", help="create the embedded demo catalog and shards")
    demo.add_argument("--days", type=int, default=14, help="days of traffic (default 14)")
    demo.add_argument("--end", help="end of the traffic, ISO UTC (default: the current hour)")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--scale", type=float, default=1.0, help="multiply call volumes")
    demo.add_argument(
        "--allow-server",
        action="store_true",
        help="allow non-SQLite URLs (tables are dropped and recreated!)",
    )

    mat = sub.add_parser(
        "materialize", help="materialize hourly, daily and weekly partitions of a window"
    )
    mat.add_argument("--start", help="window start, ISO 8601 (UTC if no offset)")
    mat.add_argument("--end", help="window end (exclusive), ISO 8601")
    mat.add_argument(
        "--last-days",
        type=int,
        help="instead of --start/--end: from midnight UTC N days ago up to now",
    )
    mat.add_argument("--billers", help="comma-separated BillerIds (default: all enabled)")
    mat.add_argument(
        "--chunk-days", type=int, default=7, help="days of hours per hourly run (default 7)"
    )
    refresh = sub.add_parser(
        "refresh",
        help="run one refresh cycle (what a schedule tick and its chain do), through DAGSTER_HOME",
    )
    sub.add_parser(
        "retention",
        help="delete what is older than the METRICS_RETENTION_* horizons (the retention job, once)",
    )
    objectives = sub.add_parser(
        "objectives",
        help="set or list billers' objectives (the BillerObjective table; rates are shares in "
        "(0, 1): 0.01 for 1 %%)",
    )
    objectives.add_argument("action", choices=("set", "list"))
    objectives.add_argument("billers", nargs="*", help="BillerIds to set (set) or show (list)")
    objectives.add_argument("--error-rate", help="ErrorRateObjective, a share in (0, 1)")
    objectives.add_argument("--timeout-rate", help="TimeoutRateObjective, a share in (0, 1)")
    objectives.add_argument("--p95-ms", help="P95ResponseTimeObjectiveMs, above 0")
    api = sub.add_parser("api", help="serve the metrics API and the dashboard")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=port_number, default=8000)
    everything = sub.add_parser(
        "up",
        help="run the Dagster webserver and daemon, the API, the collector and the consumer "
        "(and NATS if it is installed but down) in one terminal; Ctrl-C stops all",
    )
    everything.add_argument("--host", default="127.0.0.1")
    everything.add_argument("--dagster-port", type=port_number, default=3000)
    everything.add_argument("--api-port", type=port_number, default=8000)
    everything.add_argument("--collector-port", type=port_number, default=8100)
    everything.add_argument("--consumer-metrics-port", type=port_number, default=9108)
    from metrics_pipeline.collected.commands import add_collected_commands

    add_collected_commands(sub)
    for command in (mat, refresh):
        command.add_argument(
            "--family",
            choices=FAMILIES,
            default="datapump",
            help="which source family (default datapump; all: every family)",
        )
    return parser


def materialize_bounds(args) -> tuple[datetime, datetime]:
    if args.last_days is not None:
        if args.start or args.end:
            raise UsageError("--last-days cannot be combined with --start/--end")
        if args.last_days < 1:
            raise UsageError("--last-days must be at least 1")
        end = utc_now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        try:
            # From midnight UTC: every family's window then starts on a partition of each level.
            return DAILY.floor(end - timedelta(days=args.last_days)), end
        except OverflowError:
            raise UsageError(
                f"--last-days {args.last_days} reaches before the first partition "
                "(METRICS_PARTITIONS_START)"
            ) from None
    if not args.start or not args.end:
        raise UsageError("give --start and --end (or --last-days)")
    return parse_time(args.start, "--start"), parse_time(args.end, "--end")


def run_demo_data(args, environ) -> int:
    from metrics_pipeline.demo import create_demo_data
    from metrics_pipeline.resources import data_dir, resource_urls

    urls = resource_urls(environ, resolve=True)
    for name in ("catalog", "shards"):
        if not urls[name].startswith("sqlite") and not args.allow_server:
            raise UsageError(
                f"demo-data replaces tables; {name} URL is not SQLite (pass --allow-server)"
            )
    if args.days < 1:
        raise UsageError("--days must be at least 1")
    if not 0 <= args.scale <= 1000:
        raise UsageError(f"--scale must be between 0 and 1000, got {args.scale:g}")
    end = parse_time(args.end, "--end") if args.end else hour_start(utc_now()) + timedelta(hours=1)
    written = create_demo_data(
        urls["catalog"], urls["shards"], end, args.days, args.seed, args.scale
    )
    total = sum(written.values())
    if urls["warehouse"].startswith("sqlite") or args.allow_server:
        from metrics_pipeline.demo import DEMO_OBJECTIVES
        from metrics_pipeline.resources.warehouse import WarehouseResource

        WarehouseResource(url=urls["warehouse"]).write_objectives(DEMO_OBJECTIVES)
        print(f"demo data: objectives of {len(DEMO_OBJECTIVES)} billers in BillerObjective")
    # The partitions begin on the Sunday on or before the demo's first day (every week whole).
    first_day = WEEKLY.floor(end - timedelta(days=args.days))
    print(
        f"demo data: {total} calls in {len(written)} shards "
        f"({', '.join(f'{s}: {n}' for s, n in written.items())}), "
        f"{args.days} days to {end:%Y-%m-%d %H:%M} UTC"
    )
    # make demo and make dev read this file.
    settings = data_dir(environ) / "demo.env"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(f"METRICS_PARTITIONS_START={first_day:%Y-%m-%d}\n")
    from metrics_pipeline.availability.demo import create_availability_demo

    root, events = create_availability_demo(environ, end, args.days, args.seed, args.scale)
    print(f"demo data: {events} request telemetry events in {root} (availability)")
    print(f"partitions start: {first_day:%Y-%m-%d} (METRICS_PARTITIONS_START, in {settings})")
    return EXIT_OK


def _quiet_dagster_warnings() -> None:
    """The partitioned checks and mappings this project uses are marked beta/preview in Dagster
    1.13; the command says so once in the README rather than on every run."""
    from dagster import BetaWarning, PreviewWarning

    warnings.filterwarnings("ignore", category=BetaWarning)
    warnings.filterwarnings("ignore", category=PreviewWarning)


def main(argv: Sequence[str] | None = None, environ=None) -> int:
    """Every expected failure is one line on stderr and exit code 2 (bad input or settings, an
    unreachable database or instance) or 1 (some billers failed, named); tracebacks only with
    --debug or METRICS_DEBUG=1."""
    environ = os.environ if environ is None else environ
    _quiet_dagster_warnings()
    args = build_parser().parse_args(argv)
    debug = args.debug or (environ.get("METRICS_DEBUG") or "").strip() in ("1", "true", "yes")
    try:
        return _run(args, environ)
    except (UsageError, ConfigurationError, DatabaseUnreachable, EnvironmentFailure) as exc:
        if debug:
            raise
        sys.stderr.write(f"metrics-pipeline: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("metrics-pipeline: interrupted\n")
        return 130
    except Exception as exc:
        if debug:
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        sys.stderr.write(
            f"metrics-pipeline: error: unexpected {type(exc).__name__}: {first} "
            "(run again with --debug for the traceback)\n"
        )
        return EXIT_FAILED


def run_objectives(args, environ) -> int:
    """``objectives set BILLER... --error-rate ...`` replaces those billers' rows (validated: a
    bad value is one line on stderr, nothing written); ``objectives list`` prints the rows and
    each biller's state at the current hour."""
    from metrics_pipeline.objectives import InvalidObjective, ObjectiveSettings, validate
    from metrics_pipeline.resources import resource_urls
    from metrics_pipeline.resources.warehouse import WarehouseResource

    warehouse = WarehouseResource(url=resource_urls(environ, resolve=True)["warehouse"])
    if args.action == "set":
        if not args.billers:
            raise UsageError("objectives set: give at least one BillerId")
        try:
            found = [
                validate(b, args.error_rate, args.timeout_rate, args.p95_ms) for b in args.billers
            ]
        except InvalidObjective as exc:
            raise UsageError(f"objectives set: {exc}") from None
        warehouse.write_objectives(found)
        print(f"objectives: {len(found)} biller(s) set")
        return EXIT_OK
    now = hour_start(utc_now()).replace(tzinfo=None)
    wanted = [int(b) for b in args.billers if b.isdigit()] or None
    found = warehouse.objective_states([now], ObjectiveSettings.from_env().min_requests, wanted)[
        now
    ]
    for biller, state in sorted(found.states.items()):
        print(f"{biller}: {state['objectives']} {state['state']}: {state['why']}")
    for biller, why in sorted(found.invalid.items()):
        print(f"{biller}: invalid: {why}")
    return EXIT_OK


def _retention(environ) -> int:
    from metrics_pipeline.retention import run_retention

    try:
        deleted = run_retention(environ)
    except RuntimeError as exc:
        sys.stderr.write(f"metrics-pipeline: retention failed: {exc}\n")
        return EXIT_FAILED
    print("retention: deleted " + ", ".join(f"{n} {name}" for name, n in deleted.items()))
    return 0


def _run(args, environ) -> int:
    from metrics_pipeline.collected.commands import COMMANDS, run_collected_command

    if args.command == "demo-data":
        return run_demo_data(args, environ)
    if args.command == "materialize":
        start, end = materialize_bounds(args)
        codes = []
        if args.family in ("datapump", "all"):
            codes.append(
                materialize_window(
                    start,
                    end,
                    parse_billers(args.billers),
                    chunk_days=args.chunk_days,
                    environ=environ,
                )
            )
        if args.family in ("availability", "all"):
            codes.append(_availability("materialize", environ, start, end))
        if args.family in ("collected", "all"):
            codes.append(_collected("materialize", environ, start, end))
        return max(codes)
    if args.command == "refresh":
        codes = []
        if args.family in ("datapump", "all"):
            codes.append(refresh_cycle(environ=environ))
        if args.family in ("availability", "all"):
            codes.append(_availability("refresh", environ))
        if args.family in ("collected", "all"):
            codes.append(_collected("refresh", environ))
        return max(codes)
    if args.command in COMMANDS:
        return run_collected_command(args, environ)
    if args.command == "retention":
        return _retention(environ)
    if args.command == "objectives":
        return run_objectives(args, environ)
    if args.command == "api":
        from metrics_pipeline.api.server import serve

        return serve(args.host, args.port, environ)
    if args.command == "up":
        from metrics_pipeline.up import Ports, up

        ports = Ports(
            args.host,
            args.dagster_port,
            args.api_port,
            args.collector_port,
            args.consumer_metrics_port,
        )
        return up(ports, environ)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
