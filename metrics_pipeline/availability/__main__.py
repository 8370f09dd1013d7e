"""``python -m metrics_pipeline.availability materialize|refresh``: the family's plain functions
from a shell, until ``metrics-pipeline materialize/refresh --family availability`` calls them."""

import argparse
import sys
from datetime import datetime

from metrics_pipeline.availability.duckdb_sql import EventFilesUnreadable
from metrics_pipeline.availability.pipeline import compute_window, refresh_once
from metrics_pipeline.resources.engines import ConfigurationError, DatabaseUnreachable


def _time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time: {text!r}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metrics_pipeline.availability")
    sub = parser.add_subparsers(dest="command", required=True)
    mat = sub.add_parser("materialize", help="minute -> daily -> published for [start, end)")
    mat.add_argument("--start", type=_time, required=True)
    mat.add_argument("--end", type=_time, required=True)
    sub.add_parser("refresh", help="one change-driven refresh cycle")
    args = parser.parse_args(argv)
    try:
        if args.command == "materialize":
            if args.end <= args.start:
                parser.error("--end must be after --start")
            report = compute_window(args.start, args.end)
        else:
            report = refresh_once()
    except (EventFilesUnreadable, DatabaseUnreachable, ConfigurationError) as exc:
        sys.stderr.write(f"availability: error: {exc}\n")
        return 2 if not isinstance(exc, EventFilesUnreadable) else 1
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
