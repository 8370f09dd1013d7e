"""Partitions, defined once: time (hour, day, week) x biller, and the mappings between levels."""

import warnings
from datetime import datetime

from dagster import (
    BetaWarning,
    DailyPartitionsDefinition,
    DimensionPartitionMapping,
    DynamicPartitionsDefinition,
    HourlyPartitionsDefinition,
    IdentityPartitionMapping,
    MultiPartitionKey,
    MultiPartitionMapping,
    MultiPartitionsDefinition,
    TimeWindowPartitionMapping,
    WeeklyPartitionsDefinition,
)

#: First partition of every level; a Sunday, so weeks line up with days and hours.
PARTITIONS_START = "2025-01-05"

#: Kept equal to the catalog's enabled billers by the biller discovery sensor.
billers_partitions = DynamicPartitionsDefinition(name="billers")

HOUR_FORMAT = "%Y-%m-%d-%H:%M"
DAY_FORMAT = "%Y-%m-%d"

# end_offset=1 keeps the running hour, day and week materializable, so they refresh as they fill.
hourly_partitions = MultiPartitionsDefinition(
    {
        "time": HourlyPartitionsDefinition(
            start_date=f"{PARTITIONS_START}-00:00", end_offset=1, timezone="UTC"
        ),
        "biller": billers_partitions,
    }
)
daily_partitions = MultiPartitionsDefinition(
    {
        "time": DailyPartitionsDefinition(
            start_date=PARTITIONS_START, end_offset=1, timezone="UTC"
        ),
        "biller": billers_partitions,
    }
)
weekly_partitions = MultiPartitionsDefinition(
    {
        "time": WeeklyPartitionsDefinition(
            start_date=PARTITIONS_START, day_offset=0, end_offset=1, timezone="UTC"
        ),
        "biller": billers_partitions,
    }
)


def _rollup_mapping() -> MultiPartitionMapping:
    """A day covers its 24 hours (a week its 7 days) of the same biller; not-yet-existing hours
    of the running day are not reported as missing."""
    # Both classes are marked beta in Dagster 1.13 but are the documented way to map a
    # time x dynamic partitioned asset; silence the warning rather than every import.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        return _mapping()


def _mapping() -> MultiPartitionMapping:
    return MultiPartitionMapping(
        {
            "time": DimensionPartitionMapping(
                "time", TimeWindowPartitionMapping(allow_nonexistent_upstream_partitions=True)
            ),
            "biller": DimensionPartitionMapping("biller", IdentityPartitionMapping()),
        }
    )


daily_from_hourly = _rollup_mapping()
weekly_from_daily = _rollup_mapping()


def partition_key(biller_id: int, start: datetime, hourly: bool = False) -> MultiPartitionKey:
    fmt = HOUR_FORMAT if hourly else DAY_FORMAT
    return MultiPartitionKey({"biller": str(biller_id), "time": start.strftime(fmt)})


def parse_partition_key(key: str) -> tuple[int, datetime]:
    """(BillerId, window start) of a "<biller>|<time>" key of any level."""
    biller, time_key = key.split("|", 1)
    fmt = HOUR_FORMAT if len(time_key) > len("YYYY-MM-DD") else DAY_FORMAT
    return int(biller), datetime.strptime(time_key, fmt)
