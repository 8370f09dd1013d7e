"""What changed in the hour folders: the files (name, size, mtime) of each folder against the
ones recorded when that hour was last aggregated, over a bounded look-back."""

import os
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path

from metrics_pipeline.availability.duckdb_sql import is_json_lines, is_parquet

FileStates = dict[str, tuple[int, int]]


def hour_folder(root: Path, hour: datetime) -> Path:
    return root / f"{hour:%Y}" / f"{hour:%m}" / f"{hour:%d}" / f"{hour:%H}"


def list_files(root: Path, hour: datetime) -> FileStates:
    """Event files of one hour folder: name -> (size, mtime in ns); {} when there is none."""
    folder = hour_folder(root, hour)
    states: FileStates = {}
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return states
    for entry in entries:
        path = Path(entry.path)
        if entry.is_file() and (is_json_lines(path) or is_parquet(path)):
            st = entry.stat()
            states[entry.name] = (st.st_size, st.st_mtime_ns)
    return states


def hours(start: datetime, end: datetime) -> Iterator[datetime]:
    hour = start.replace(minute=0, second=0, microsecond=0)
    while hour < end:
        yield hour
        hour += timedelta(hours=1)


def changed_hours(
    listed: Mapping[datetime, FileStates], recorded: Mapping[datetime, FileStates]
) -> list[datetime]:
    """Hours whose files differ from the recorded ones (added, grown, touched or removed)."""
    keys = set(listed) | set(recorded)
    return sorted(h for h in keys if listed.get(h, {}) != recorded.get(h, {}))


def lookback_window(now: datetime, days: int) -> tuple[datetime, datetime]:
    """[start, end) of the hours a refresh looks at: ``days`` back to the running hour."""
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return end - timedelta(days=days), end
