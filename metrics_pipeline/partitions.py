"""Partitions, defined once: one time partitions definition per level (hour, day, week; UTC).

Billers are rows inside a partition, not a partition dimension: the partition count depends on
time only, and per-biller state lives in the warehouse's coverage ledger. Keys are built and
parsed through Dagster's own definitions.
"""

import os
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

from dagster import (
    DailyPartitionsDefinition,
    HourlyPartitionsDefinition,
    TimeWindowPartitionMapping,
    TimeWindowPartitionsDefinition,
    WeeklyPartitionsDefinition,
)

from metrics_pipeline.semantics import DAILY, HOURLY, Level, week_start
from metrics_pipeline.tags import RANGE_END, RANGE_START

#: The first day of the partitions when METRICS_PARTITIONS_START is not set.
DEFAULT_PARTITIONS_START = "2025-01-05"


def parse_partitions_start(text: str | None) -> date:
    """The first day of every level's partitions: METRICS_PARTITIONS_START (ISO ``YYYY-MM-DD``)
    moved back to the Sunday on or before it, so the first week is whole. A week whose first
    days had no hour partition could never be read in full: its row would either claim the
    week (missing those days' calls) or stay partial for ever."""
    value = (text or DEFAULT_PARTITIONS_START).strip()
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"METRICS_PARTITIONS_START must be a date YYYY-MM-DD, got {value!r}"
        ) from None
    return week_start(datetime.combine(day, datetime.min.time())).date()


def partitions_start(environ: Mapping[str, str] | None = None) -> date:
    """METRICS_PARTITIONS_START of ``environ`` (default: the process's), parsed: the one place
    every family reads it."""
    env = os.environ if environ is None else environ
    return parse_partitions_start(env.get("METRICS_PARTITIONS_START"))


@lru_cache(maxsize=32)
def _definition(level_name: str, start: date) -> TimeWindowPartitionsDefinition:
    # end_offset=1 keeps the running hour, day and week materializable, so they refresh as they
    # fill. ``start`` is a Sunday (parse_partitions_start): every level begins with a whole week.
    if level_name == HOURLY.name:
        return HourlyPartitionsDefinition(
            start_date=f"{start:%Y-%m-%d}-00:00", end_offset=1, timezone="UTC"
        )
    if level_name == DAILY.name:
        return DailyPartitionsDefinition(
            start_date=f"{start:%Y-%m-%d}", end_offset=1, timezone="UTC"
        )
    sunday = week_start(datetime.combine(start, datetime.min.time()))
    return WeeklyPartitionsDefinition(
        start_date=f"{sunday:%Y-%m-%d}", day_offset=0, end_offset=1, timezone="UTC"
    )


def partitions_def(level: Level, start: date) -> TimeWindowPartitionsDefinition:
    """The time partitions of ``level`` beginning at ``start`` (the same object for equal args)."""
    return _definition(level.name, start)


def first_window(level: Level, start: date) -> datetime:
    """Start of the first partition of ``level``."""
    return level.floor(datetime.combine(start, datetime.min.time()))


def require_partitioned(first: datetime, start: date) -> None:
    """ValueError naming the setting when ``first`` (naive UTC) is before the first partition."""
    earliest = first_window(HOURLY, start)
    if first < earliest:
        raise ValueError(
            f"start {first:%Y-%m-%d %H:%M} is before the first partition {earliest:%Y-%m-%d} "
            "(METRICS_PARTITIONS_START)"
        )


def partition_key(level: Level, start: date, window_start: datetime) -> str:
    """The partition key of the window of ``level`` that contains ``window_start`` (naive UTC)."""
    ts = window_start.replace(tzinfo=UTC).timestamp()
    return partitions_def(level, start).get_partition_key_for_timestamp(ts)


def window_of(level: Level, start: date, key: str) -> tuple[datetime, datetime]:
    """[start, end) of a partition key, as naive UTC."""
    tw = partitions_def(level, start).time_window_for_partition_key(key)
    return _naive(tw.start), _naive(tw.end)


def windows_of(level: Level, start: date, keys) -> list[datetime]:
    """Sorted window starts of partition keys."""
    return sorted(window_of(level, start, k)[0] for k in keys)


def contiguous_runs(
    level: Level, windows, join_within: timedelta | None = None
) -> list[tuple[datetime, datetime]]:
    """Sorted window starts of ``level`` as (first, last) pairs of consecutive windows: what one
    ranged run each covers. With ``join_within``, windows whose starts are less than that apart
    are one run too (gaps merged: what one read covers)."""
    within = join_within if join_within is not None else 2 * level.length
    runs: list[list[datetime]] = []
    for w in sorted(set(windows)):
        if runs and w - runs[-1][1] < within:
            runs[-1][1] = w
        else:
            runs.append([w, w])
    return [(a, b) for a, b in runs]


def _naive(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def rollup_mapping() -> TimeWindowPartitionMapping:
    """A day covers its 24 hours (a week its 7 days); hours of the running day that do not exist
    yet are not reported as missing."""
    return TimeWindowPartitionMapping(allow_nonexistent_upstream_partitions=True)


def hours_between(first: datetime, stop: datetime) -> int:
    return int((stop - first) / timedelta(hours=1))


def partition_range_tags(
    level: Level, start: date, first: datetime, last: datetime
) -> dict[str, str]:
    """Tags for one run over the partitions of ``level`` from ``first`` to ``last`` (inclusive),
    for any family's job on the platform's partitions."""
    return {
        RANGE_START: partition_key(level, start, first),
        RANGE_END: partition_key(level, start, last),
    }
