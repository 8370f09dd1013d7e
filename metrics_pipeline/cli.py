"""The ``metrics-pipeline`` command: demo data, and headless materialization of a window.

Exit codes: 0 done; 1 some partitions failed (named on stderr); 2 bad input or a database that
cannot be reached (one line on stderr).
"""

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from metrics_pipeline.clock import utc_now
from metrics_pipeline.datapump.runs import materialize_window, refresh_cycle
from metrics_pipeline.execution import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    EnvironmentFailure,
    UsageError,
)
from metrics_pipeline.resources.engines import ConfigurationError, DatabaseUnreachable
from metrics_pipeline.semantics import DAILY, WEEKLY, hour_start
from metrics_pipeline.settings import port_number

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


def _availability(what: str, environ, start=None, end=None) -> int:
    """The availability family's materialize (minute -> daily -> published) or refresh, as
    Dagster runs."""
    from metrics_pipeline.availability.runs import materialize_availability, refresh_availability

    try:
        if what == "materialize":
            report = materialize_availability(start, end, environ)
        else:
            report = refresh_availability(environ)
    except ValueError as exc:
        raise UsageError(f"availability: {exc}") from None
    return _report("availability", report)


def _collected(what: str, environ, start=None, end=None) -> int:
    """The collected-metrics family's materialize or refresh, as one Dagster run."""
    from metrics_pipeline.collected.runs import materialize_collected, refresh_collected

    try:
        if what == "materialize":
            report = materialize_collected(start, end, environ=environ)
        else:
            report = refresh_collected(environ=environ)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return _report("collected", report)


def _report(family: str, report) -> int:
    """The one printer of a family's run report: its summary line on stdout, its first error on
    stderr and exit 1 when it failed."""
    sys.stdout.write(report.summary() + "\n")
    if not report.success:
        sys.stderr.write(f"metrics-pipeline: {family}: {report.errors[0]}\n")
        return EXIT_FAILED
    return EXIT_OK


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
    from metrics_pipeline.datapump.demo import create_demo_data
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
        from metrics_pipeline.datapump.demo import DEMO_OBJECTIVES
        from metrics_pipeline.datapump.objectives import write_objectives
        from metrics_pipeline.resources.warehouse import WarehouseResource

        write_objectives(WarehouseResource(url=urls["warehouse"]), DEMO_OBJECTIVES)
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
    from metrics_pipeline.datapump.objectives import (
        InvalidObjective,
        ObjectiveSettings,
        objective_states,
        validate,
        write_objectives,
    )
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
        write_objectives(warehouse, found)
        print(f"objectives: {len(found)} biller(s) set")
        return EXIT_OK
    now = hour_start(utc_now()).replace(tzinfo=None)
    wanted = [int(b) for b in args.billers if b.isdigit()] or None
    found = objective_states(warehouse, [now], ObjectiveSettings.from_env().min_requests, wanted)[
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
