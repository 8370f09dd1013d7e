"""The family's partitions: the platform's own (metrics_pipeline.partitions), hourly for the
minute asset, daily for the daily and published ones."""

from collections.abc import Mapping
from dataclasses import dataclass

from dagster import (
    DailyPartitionsDefinition,
    HourlyPartitionsDefinition,
    TimeWindowPartitionMapping,
)

from metrics_pipeline.partitions import partitions_def, partitions_start, rollup_mapping
from metrics_pipeline.semantics import DAILY, HOURLY


@dataclass(frozen=True)
class AvailabilityPartitions:
    hourly: HourlyPartitionsDefinition
    daily: DailyPartitionsDefinition
    #: A day covers its 24 hours; hours after the running one are not reported missing.
    daily_from_hourly: TimeWindowPartitionMapping


def availability_partitions(environ: Mapping[str, str] | None = None) -> AvailabilityPartitions:
    """UTC partitions from METRICS_PARTITIONS_START, the same objects as the DataPump family's."""
    start = partitions_start(environ)
    return AvailabilityPartitions(
        hourly=partitions_def(HOURLY, start),
        daily=partitions_def(DAILY, start),
        daily_from_hourly=rollup_mapping(),
    )
