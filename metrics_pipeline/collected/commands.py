"""The ``collector`` and ``consumer`` subcommands of ``metrics-pipeline``."""

import argparse
import sys
from collections.abc import Mapping

from metrics_pipeline.collected.settings import CollectedSettings
from metrics_pipeline.settings import port_number

COMMANDS = ("collector", "consumer")


def add_collected_commands(sub: argparse._SubParsersAction) -> None:
    """Register the family's subcommands on the CLI's subparsers."""
    col = sub.add_parser("collector", help="serve the metric collection endpoint (/collect)")
    col.add_argument("--host", default="127.0.0.1")
    col.add_argument("--port", type=port_number, default=8100)
    con = sub.add_parser("consumer", help="write collected points from the bus to the warehouse")
    con.add_argument("--once", action="store_true", help="drain what the bus holds, then exit")
    con.add_argument(
        "--metrics-port",
        type=lambda t: 0 if t == "0" else port_number(t),
        default=9108,
        help="Prometheus /metrics port (0: none)",
    )


def run_collected_command(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run a command of COMMANDS: 0 done, 1 failed, 2 bad settings or an unreachable bus (one
    line on stderr; ConfigurationError propagates to the CLI, which prints it)."""
    from metrics_pipeline.collected.bus import BusUnavailable

    settings = CollectedSettings.from_environ(environ)
    try:
        return _run(args, environ, settings)
    except BusUnavailable as exc:
        print(f"metrics-pipeline: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, environ: Mapping[str, str], settings) -> int:
    if args.command == "collector":
        from metrics_pipeline.collected.collector import serve_collector

        return serve_collector(args.host, args.port, settings)
    from metrics_pipeline.collected.consumer import run_consumer
    from metrics_pipeline.collected.store import CollectedStore
    from metrics_pipeline.resources import warehouse_resource

    warehouse = warehouse_resource(environ, resolve=True)
    store = CollectedStore(warehouse.engine(), warehouse.db_schema)
    result = run_consumer(settings, store, args.once, args.metrics_port)
    print(
        f"consumer: {result.messages} messages, {result.inserted} points stored, "
        f"{result.duplicates} already stored",
        file=sys.stderr,
    )
    return 1 if result.errors and args.once else 0
