"""Planning the refresh cycle: which windows a tick refreshes, as run requests over key ranges.

A range of time partitions is one run whatever the number of billers (they are rows inside each
partition), so a refresh costs three runs: hourly, then daily, then weekly.
"""

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta

from dagster import RunRequest

from metrics_pipeline.partitions import partition_key, window_of
from metrics_pipeline.semantics import Level, hour_start

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
REFRESH_TAG = "metrics/refresh"
LEVEL_TAG = "metrics/level"


def refresh_hours(tick: datetime, every_minutes: int) -> list[datetime]:
    """The running hour, plus the previous hour while it closed at most one interval ago: so the
    previous hour is read again at least once after it closed and late rows are counted."""
    current = hour_start(tick)
    hours = [current]
    if tick - current <= timedelta(minutes=every_minutes):
        hours.insert(0, current - timedelta(hours=1))
    return hours


def range_tags(level: Level, start: date, first: datetime, last: datetime) -> dict[str, str]:
    """Tags for one run over the partitions of ``level`` from ``first`` to ``last`` (inclusive)."""
    return {
        RANGE_START: partition_key(level, start, first),
        RANGE_END: partition_key(level, start, last),
        LEVEL_TAG: level.name,
    }


def windows_from_tags(level: Level, start: date, tags: Mapping[str, str]) -> list[datetime]:
    """The first and last window start of a ranged run (or its single partition)."""
    if RANGE_START in tags:
        return [window_of(level, start, tags[t])[0] for t in (RANGE_START, RANGE_END)]
    hour = window_of(level, start, tags["dagster/partition"])[0]
    return [hour, hour]


def refresh_request(
    level: Level,
    start: date,
    hours: Sequence[datetime],
    refresh_id: str,
    extra_tags: Mapping[str, str] | None = None,
) -> RunRequest:
    """One run refreshing ``level`` over the windows that contain ``hours``."""
    windows = sorted({level.floor(h) for h in hours})
    return RunRequest(
        run_key=f"refresh-{refresh_id}-{level.name}",
        job_name=level.job_name,
        tags={
            **range_tags(level, start, windows[0], windows[-1]),
            REFRESH_TAG: refresh_id,
            **(extra_tags or {}),
        },
    )
