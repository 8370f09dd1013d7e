"""The family's time-only partitions, defined in one function so the lead's time-only redesign
(issue 10) can replace it: hourly for the minute asset, daily for the daily and published ones."""

import os
from collections.abc import Mapping
from dataclasses import dataclass

from dagster import (
    DailyPartitionsDefinition,
    HourlyPartitionsDefinition,
    TimeWindowPartitionMapping,
)

DEFAULT_START = "2025-01-05"


@dataclass(frozen=True)
class AvailabilityPartitions:
    hourly: HourlyPartitionsDefinition
    daily: DailyPartitionsDefinition
    #: A day covers its 24 hours; hours after the running one are not reported missing.
    daily_from_hourly: TimeWindowPartitionMapping


def availability_partitions(environ: Mapping[str, str] | None = None) -> AvailabilityPartitions:
    """UTC partitions from METRICS_PARTITIONS_START (default 2025-01-05); end_offset=1 keeps the
    running hour and day materializable while they fill."""
    env = os.environ if environ is None else environ
    start = env.get("METRICS_PARTITIONS_START") or DEFAULT_START
    return AvailabilityPartitions(
        hourly=HourlyPartitionsDefinition(
            start_date=f"{start[:10]}-00:00", end_offset=1, timezone="UTC"
        ),
        daily=DailyPartitionsDefinition(start_date=start[:10], end_offset=1, timezone="UTC"),
        daily_from_hourly=TimeWindowPartitionMapping(allow_nonexistent_upstream_partitions=True),
    )
