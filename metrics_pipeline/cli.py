"""The ``metrics-pipeline`` command: demo data, and headless materialization of a window.

Exit codes: 0 done; 1 some partitions failed (named on stderr); 2 bad input or a database that
cannot be reached (one line on stderr).
"""

import argparse
import os
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from metrics_pipeline.resources.engines import ConfigurationError, DatabaseUnreachable
from metrics_pipeline.semantics import day_start, week_start

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(ValueError):
    """Bad command-line input."""


# --- input parsing ------------------------------------------------------------------------------


def parse_time(text: str, what: str) -> datetime:
    """An ISO 8601 time as naive UTC (a time without offset is taken as UTC)."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{what}: not an ISO 8601 date or time: {text!r}") from None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def parse_billers(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UsageError(f"--billers: expected comma-separated BillerIds, got {text!r}") from None


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


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


# --- materialize --------------------------------------------------------------------------------


@dataclass
class LevelResult:
    partitions: int = 0
    runs: int = 0
    failed: dict[int, str] = field(default_factory=dict)


def contiguous_groups(order: Sequence[str], selected: set[int]) -> list[list[str]]:
    """Runs of selected billers that are adjacent in the partition order (one rectangle each)."""
    groups: list[list[str]] = []
    previous_selected = False
    for key in order:
        if int(key) in selected:
            if previous_selected:
                groups[-1].append(key)
            else:
                groups.append([key])
            previous_selected = True
        else:
            previous_selected = False
    return groups


def _failure_details(result, group: list[str]) -> dict[int, str]:
    """{BillerId: reason} from a failed run: the asset's failure metadata when it has some,
    else the error's first line for every biller of the run."""
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            if data.user_failure_data and "reasons" in data.user_failure_data.metadata:
                reasons = data.user_failure_data.metadata["reasons"].value
                return {int(b): why for b, why in reasons.items()}
            message = data.error.message.strip().splitlines()[0] if data.error else "step failed"
            return {int(b): message for b in group}
    return {int(b): "run failed" for b in group}


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
    from dagster import DagsterInstance

    from metrics_pipeline.dagster_internal import throwaway_instance
    from metrics_pipeline.definitions import build_definitions
    from metrics_pipeline.partitions import PARTITIONS_START, billers_partitions
    from metrics_pipeline.refresh import LEVEL_TAG, rectangle_tags
    from metrics_pipeline.resources import build_resources
    from metrics_pipeline.semantics import LEVEL_LENGTH, WEEKLY, day_start, hour_start, week_start

    environ = os.environ if environ is None else environ
    out, err = out or sys.stdout, err or sys.stderr
    if start >= end:
        raise UsageError(f"--start {start.isoformat()} must be before --end {end.isoformat()}")
    earliest = datetime.fromisoformat(PARTITIONS_START)
    if start < earliest:
        raise UsageError(f"--start must be on or after {PARTITIONS_START} (the first partition)")
    last_hour = hour_start(utc_now())
    if start > last_hour:
        raise UsageError(f"--start {start.isoformat()} is in the future")
    # Whole weeks, so every day and week the window touches is complete and exact.
    first = week_start(start)
    stop = min(
        week_start(end - timedelta(microseconds=1)) + LEVEL_LENGTH[WEEKLY],
        last_hour + timedelta(hours=1),
    )

    resources = build_resources(environ, resolve=True)
    catalog_billers = resources["catalog"].enabled_billers()
    known = {b.biller_id for b in catalog_billers}
    if biller_ids is not None:
        unknown = sorted(set(biller_ids) - known)
        if unknown:
            raise UsageError(
                f"--billers: not enabled in the catalog: {', '.join(map(str, unknown))}"
            )
    selected = set(biller_ids) if biller_ids is not None else known
    if not selected:
        raise UsageError("the catalog has no DataPump-enabled billers")
    resources["warehouse"].ensure_schema()

    lean_events = False
    if instance is None and environ.get("DAGSTER_HOME"):
        instance = DagsterInstance.from_config(ensure_dagster_home(environ["DAGSTER_HOME"]))
    elif instance is None:
        # Nobody reads this throw-away instance afterwards (failures are taken from the step
        # failures), so it keeps no asset index and gets one "planned" event per asset and run
        # instead of one per partition: together about half of Dagster's fixed cost.
        instance = throwaway_instance()
        lean_events = True
    have = instance.get_dynamic_partitions(billers_partitions.name)
    missing = [str(b) for b in sorted(known) if str(b) not in have]
    if missing:
        instance.add_dynamic_partitions(billers_partitions.name, missing)
    order = instance.get_dynamic_partitions(billers_partitions.name)
    defs = build_definitions(environ, resolve=True)
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}

    hours = int((stop - first) / timedelta(hours=1))
    days = len({day_start(first + timedelta(hours=h)) for h in range(hours)})
    weeks = len({week_start(first + timedelta(hours=h)) for h in range(hours)})
    total = len(selected) * (hours + days + weeks)
    progress = Progress(total, err)
    results = {level: LevelResult() for level in ("hourly", "daily", "weekly")}
    started = time.monotonic()

    def run(level: str, group: list[str], windows: list[datetime]) -> None:
        job = defs.resolve_job_def(f"{level}_job")
        tags = {**rectangle_tags(group, level, windows), LEVEL_TAG: level, "metrics/source": "cli"}
        result = job.execute_in_process(
            instance=instance, tags=tags, run_config=quiet, raise_on_error=False
        )
        n = len(group) * len(_windows_between(level, windows))
        res = results[level]
        res.runs += 1
        if result.success:
            res.partitions += n
        else:
            failed = _failure_details(result, group)
            res.failed.update(failed)
            res.partitions += n - len(failed) * len(_windows_between(level, windows))
        progress.advance(n, level)

    step = timedelta(days=max(1, chunk_days))
    with _planned_events_per_asset(lean_events):
        _run_levels(run, order, selected, first, stop, step, results)
    progress.close()

    elapsed = time.monotonic() - started
    print_summary(out, resources["warehouse"], sorted(selected), first, stop, results, elapsed)
    failed = {b: why for r in results.values() for b, why in r.failed.items()}
    if failed:
        for b, why in sorted(failed.items()):
            err.write(f"metrics-pipeline: failed partitions of biller {b}: {why}\n")
        return EXIT_FAILED
    return EXIT_OK


def _run_levels(run, order, selected, first, stop, step, results) -> None:
    """Hourly in rectangles of billers x ``step``, then daily and weekly for billers whose
    hours all succeeded."""
    for group in contiguous_groups(order, selected):
        chunk = first
        while chunk < stop:
            chunk_end = min(chunk + step, stop)
            run("hourly", group, [chunk, chunk_end - timedelta(hours=1)])
            chunk = chunk_end
    hourly_failed = set(results["hourly"].failed)
    for level in ("daily", "weekly"):
        floor = day_start if level == "daily" else week_start
        for group in contiguous_groups(order, selected - hourly_failed):
            run(level, group, [floor(first), floor(stop - timedelta(hours=1))])


@contextmanager
def _planned_events_per_asset(enabled: bool):
    """Ask Dagster for one planned event per asset and run (not per partition) while running."""
    name = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"
    before = os.environ.get(name)
    if enabled:
        os.environ[name] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def ensure_dagster_home(path: str) -> str:
    """Create DAGSTER_HOME with a minimal dagster.yaml (local storage, no telemetry) if missing."""
    home = Path(path)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(
            "# Created by metrics-pipeline: Dagster's default local storage in this folder.\n"
            "telemetry:\n  enabled: false\n"
        )
    return str(home)


def _windows_between(level: str, windows: list[datetime]) -> list[datetime]:
    from metrics_pipeline.semantics import window

    code = {"hourly": 1, "daily": 2, "weekly": 3}[level]
    out, current = [], windows[0]
    while current <= windows[-1]:
        out.append(current)
        current = window(code, current)[1]
    return out


def print_summary(out, warehouse, billers, first, stop, results, elapsed) -> None:
    from metrics_pipeline.semantics import DAILY, rollup

    out.write(
        f"\nWindow {first:%Y-%m-%d %H:%M} .. {stop:%Y-%m-%d %H:%M} UTC (whole weeks), "
        f"{len(billers)} billers, {elapsed:.1f}s\n"
    )
    for level, res in results.items():
        busy = sorted(b for b, why in res.failed.items() if why.startswith("shard busy"))
        status = f", {len(res.failed)} biller(s) FAILED" if res.failed else ""
        status += f" (busy: {', '.join(map(str, busy))})" if busy else ""
        out.write(f"  {level:<7} {res.partitions:>6} partitions in {res.runs} runs{status}\n")
    partials = warehouse.read_partials(DAILY, billers, first, stop)
    out.write(
        f"\n  {'Biller':>6} {'Requests':>9} {'AvgMs':>8} {'P95Ms':>8} {'Error%':>7} "
        f"{'Timeout%':>8}\n"
    )
    for biller in billers:
        total = rollup(p for (b, _), p in partials.items() if b == biller)
        out.write(
            f"  {biller:>6} {total.request_count:>9} {_fmt(total.avg_response_time):>8} "
            f"{_fmt(total.percentile(95)):>8} {_fmt(total.error_rate):>7} "
            f"{_fmt(total.timeout_rate):>8}\n"
        )


def _fmt(value) -> str:
    return "-" if value is None else f"{value}"


# --- entry point --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metrics-pipeline",
        description="DataPump service-level metrics: demo data and headless materialization.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

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
        "--last-days", type=int, help="instead of --start/--end: the last N days up to now"
    )
    mat.add_argument("--billers", help="comma-separated BillerIds (default: all enabled)")
    mat.add_argument(
        "--chunk-days", type=int, default=7, help="days of hours per hourly run (default 7)"
    )
    api = sub.add_parser("api", help="serve the metrics API and the dashboard")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    return parser


def materialize_bounds(args) -> tuple[datetime, datetime]:
    if args.last_days is not None:
        if args.start or args.end:
            raise UsageError("--last-days cannot be combined with --start/--end")
        if args.last_days < 1:
            raise UsageError("--last-days must be at least 1")
        end = utc_now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        return end - timedelta(days=args.last_days), end
    if not args.start or not args.end:
        raise UsageError("give --start and --end (or --last-days)")
    return parse_time(args.start, "--start"), parse_time(args.end, "--end")


def run_demo_data(args, environ) -> int:
    from metrics_pipeline.demo import create_demo_data
    from metrics_pipeline.resources import resource_urls
    from metrics_pipeline.semantics import hour_start

    urls = resource_urls(environ, resolve=True)
    for name in ("catalog", "shards"):
        if not urls[name].startswith("sqlite") and not args.allow_server:
            raise UsageError(
                f"demo-data replaces tables; {name} URL is not SQLite (pass --allow-server)"
            )
    if args.days < 1:
        raise UsageError("--days must be at least 1")
    end = parse_time(args.end, "--end") if args.end else hour_start(utc_now()) + timedelta(hours=1)
    written = create_demo_data(
        urls["catalog"], urls["shards"], end, args.days, args.seed, args.scale
    )
    total = sum(written.values())
    print(
        f"demo data: {total} calls in {len(written)} shards "
        f"({', '.join(f'{s}: {n}' for s, n in written.items())}), "
        f"{args.days} days to {end:%Y-%m-%d %H:%M} UTC"
    )
    from metrics_pipeline.availability.demo import create_availability_demo

    root, events = create_availability_demo(environ, end, args.days, args.seed, args.scale)
    print(f"demo data: {events} request telemetry events in {root} (availability)")
    return EXIT_OK


def main(argv: Sequence[str] | None = None, environ=None) -> int:
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo-data":
            return run_demo_data(args, environ)
        if args.command == "materialize":
            start, end = materialize_bounds(args)
            return materialize_window(
                start,
                end,
                parse_billers(args.billers),
                chunk_days=args.chunk_days,
                environ=environ,
            )
        if args.command == "api":
            from metrics_pipeline.api.server import serve

            return serve(args.host, args.port, environ)
    except (UsageError, ConfigurationError, DatabaseUnreachable) as exc:
        sys.stderr.write(f"metrics-pipeline: error: {exc}\n")
        return EXIT_USAGE
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
