"""The pending-aggregation queue, replaced: which hourly partitions of a bounded look-back window
are missing from the warehouse or failed in Dagster, and the backfill that mends them."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from dagster import AssetKey, AssetPartitionStatus, DagsterInstance

from metrics_pipeline.assets.common import LEVEL_NAMES
from metrics_pipeline.partitions import hourly_partitions, partition_key
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import DAILY, HOURLY, WEEKLY, day_start, hour_start, week_start
from metrics_pipeline.settings import from_env
from metrics_pipeline.sql.warehouse import AGGREGATES

STATUS_ASSET = AssetKey("error_rate_hourly")


@dataclass(frozen=True)
class BacklogSettings:
    lookback_hours: int = 7 * 24
    #: Recent hours are the refresh schedule's and the retry sensor's to fill.
    settle_hours: int = 2
    alert_threshold: int = 48

    @classmethod
    def from_env(cls, environ=None) -> "BacklogSettings":
        return from_env(
            cls,
            {
                "lookback_hours": "METRICS_BACKLOG_LOOKBACK_HOURS",
                "settle_hours": "METRICS_BACKLOG_SETTLE_HOURS",
                "alert_threshold": "METRICS_BACKLOG_ALERT_THRESHOLD",
            },
            environ,
        )

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        end = hour_start(now) - timedelta(hours=self.settle_hours)
        return end - timedelta(hours=self.lookback_hours), end


@dataclass
class Backlog:
    start: datetime
    end: datetime
    missing: set[tuple[int, datetime]]
    failed: set[tuple[int, datetime]]

    @property
    def gaps(self) -> set[tuple[int, datetime]]:
        return self.missing | self.failed

    def describe(self) -> str:
        return (
            f"{len(self.gaps)} hourly partition(s) to mend between {self.start:%Y-%m-%d %H:%M} and "
            f"{self.end:%Y-%m-%d %H:%M} UTC ({len(self.missing)} missing in the warehouse, "
            f"{len(self.failed)} failed)"
        )


def find_backlog(
    instance: DagsterInstance,
    warehouse: WarehouseResource,
    billers: list[str],
    now: datetime,
    settings: BacklogSettings,
) -> Backlog:
    start, end = settings.window(now)
    hours = [start + timedelta(hours=h) for h in range(int((end - start) / timedelta(hours=1)))]
    ids = [int(b) for b in billers]
    expected = {(b, h) for b in ids for h in hours}
    missing = expected - warehouse.present_keys(HOURLY, ids, start, end)
    failed: set[tuple[int, datetime]] = set()
    if expected:
        keys = {partition_key(b, h, hourly=True): (b, h) for b, h in expected}
        status = instance.get_status_by_partition(STATUS_ASSET, list(keys), hourly_partitions) or {}
        failed = {keys[k] for k, s in status.items() if s == AssetPartitionStatus.FAILED}
    return Backlog(start, end, missing, failed)


def backfill_partitions(gaps) -> list[tuple[AssetKey, str]]:
    """Every asset partition to rebuild for these hourly gaps: the hours, then their days and
    weeks (the backfill runs them in dependency order)."""
    out: set[tuple[AssetKey, str]] = set()
    for biller, hour in gaps:
        for level, start, hourly in (
            (HOURLY, hour, True),
            (DAILY, day_start(hour), False),
            (WEEKLY, week_start(hour), False),
        ):
            key = partition_key(biller, start, hourly)
            for agg in AGGREGATES:
                out.add((AssetKey(f"{agg.asset_stem}_{LEVEL_NAMES[level]}"), key))
    return sorted(out, key=lambda x: (x[0].to_user_string(), x[1]))
