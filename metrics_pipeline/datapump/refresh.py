"""Planning the refresh cycle: which windows a tick refreshes, as run requests over key ranges.

A range of time partitions is one run whatever the number of billers (they are rows inside each
partition), so a refresh costs three runs: hourly, then daily, then weekly.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from dagster import RunRequest

from metrics_pipeline.partitions import (
    contiguous_runs,
    partition_range_tags,
    window_of,
)
from metrics_pipeline.semantics import HOURLY, Level, hour_start
from metrics_pipeline.settings import from_env
from metrics_pipeline.tags import LEVEL_TAG, RANGE_END, RANGE_START, REFRESH_TAG

HOUR_TEXT = "%Y-%m-%dT%H"


@dataclass(frozen=True)
class ChangeSettings:
    #: Minutes between refresh cycles (the refresh schedule; `metrics-pipeline refresh` reads
    #: the hours a cycle of this interval would).
    refresh_minutes: int = 30
    #: How far back a shard seen for the first time is read by the refresh (seed 004: 15 min).
    initial_lookback_minutes: int = 15
    #: Ids below the cursor read again at every refresh (late commits of lower Ids).
    overlap_ids: int = 1000
    #: Biller-hours left busy or unreachable (of any age, oldest first) that a refresh reads
    #: again, so `metrics-pipeline refresh` without a daemon heals them too.
    heal_hours_per_refresh: int = 2000

    @classmethod
    def from_env(cls, environ=None) -> "ChangeSettings":
        return from_env(
            cls,
            {
                "refresh_minutes": "METRICS_REFRESH_MINUTES",
                "initial_lookback_minutes": "METRICS_INITIAL_LOOKBACK_MINUTES",
                "overlap_ids": "METRICS_CURSOR_OVERLAP_IDS",
                "heal_hours_per_refresh": "METRICS_REFRESH_HEAL_HOURS",
            },
            environ,
        )

    @property
    def initial_lookback(self) -> timedelta:
        return timedelta(minutes=self.initial_lookback_minutes)


def encode_hours(hours) -> str:
    """Hours as compact inclusive ranges: ``2025-03-01T05/2025-03-01T07,2025-03-09T10``."""
    runs = contiguous_runs(HOURLY, hours)
    return ",".join(
        f"{a:{HOUR_TEXT}}" if a == b else f"{a:{HOUR_TEXT}}/{b:{HOUR_TEXT}}" for a, b in runs
    )


def decode_hours(text: str) -> list[datetime]:
    out: list[datetime] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, _, last = part.partition("/")
        a = datetime.strptime(first, HOUR_TEXT)
        b = datetime.strptime(last or first, HOUR_TEXT)
        while a <= b:
            out.append(a)
            a += timedelta(hours=1)
    return out


def refresh_hours(tick: datetime, every_minutes: int) -> list[datetime]:
    """The running hour, plus the previous hour while it closed at most one interval ago: so the
    previous hour is read again at least once after it closed and late rows are counted."""
    current = hour_start(tick)
    hours = [current]
    if tick - current <= timedelta(minutes=every_minutes):
        hours.insert(0, current - timedelta(hours=1))
    return hours


def range_tags(level: Level, start: date, first: datetime, last: datetime) -> dict[str, str]:
    """A DataPump level's run over a range: the partition range, and the level that the refresh
    chain follows."""
    return {**partition_range_tags(level, start, first, last), LEVEL_TAG: level.name}


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
