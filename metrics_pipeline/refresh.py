"""Planning the refresh cycle: which windows a tick refreshes, as run requests over rectangles.

A rectangle "first biller .. last biller x first window .. last window" is one run whatever the
number of billers, so a refresh costs three runs (hourly, then daily, then weekly).
"""

from collections.abc import Sequence
from datetime import datetime, timedelta

from dagster import RunRequest

from metrics_pipeline.partitions import DAY_FORMAT, HOUR_FORMAT, parse_partition_key
from metrics_pipeline.semantics import day_start, hour_start, week_start

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
REFRESH_TAG = "metrics/refresh"
LEVEL_TAG = "metrics/level"
LEVELS = ("hourly", "daily", "weekly")


def refresh_hours(tick: datetime, every_minutes: int) -> list[datetime]:
    """The running hour, plus the previous hour while it closed at most one interval ago: so the
    previous hour is read again at least once after it closed and late rows are counted."""
    current = hour_start(tick)
    hours = [current]
    if tick - current <= timedelta(minutes=every_minutes):
        hours.insert(0, current - timedelta(hours=1))
    return hours


def windows_for(level: str, hours: Sequence[datetime]) -> list[datetime]:
    floor = {"hourly": lambda h: h, "daily": day_start, "weekly": week_start}[level]
    return sorted({floor(h) for h in hours})


def rectangle_tags(billers: Sequence[str], level: str, windows: Sequence[datetime]) -> dict:
    fmt = HOUR_FORMAT if level == "hourly" else DAY_FORMAT
    return {
        RANGE_START: f"{billers[0]}|{windows[0].strftime(fmt)}",
        RANGE_END: f"{billers[-1]}|{windows[-1].strftime(fmt)}",
    }


def refresh_request(
    billers: Sequence[str], level: str, hours: Sequence[datetime], refresh_id: str
) -> RunRequest:
    """One run refreshing ``level`` for every biller over the windows that contain ``hours``."""
    windows = windows_for(level, hours)
    return RunRequest(
        run_key=f"refresh-{refresh_id}-{level}",
        job_name=f"{level}_job",
        tags={
            **rectangle_tags(billers, level, windows),
            REFRESH_TAG: refresh_id,
            LEVEL_TAG: level,
        },
    )


def windows_from_tags(tags: dict) -> list[datetime]:
    """The first and last window start of a rectangle run, from its range tags."""
    return [parse_partition_key(tags[t])[1] for t in (RANGE_START, RANGE_END)]
