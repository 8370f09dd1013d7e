"""The pending-aggregation queue, replaced: which hours of a bounded look-back window are not
fully covered in the ledger (some enabled biller not written), and the backfill that mends them."""

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from dagster import AssetKey

from metrics_pipeline.coverage import DATAPUMP, MISCONFIGURED, RETRYABLE, WRITTEN
from metrics_pipeline.partitions import partition_key
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import HOURLY, LEVELS, hour_start
from metrics_pipeline.settings import from_env
from metrics_pipeline.sql.warehouse import AGGREGATES


@dataclass(frozen=True)
class BacklogSettings:
    lookback_hours: int = 7 * 24
    #: Recent hours are the refresh schedule's and the retry sensor's to fill.
    settle_hours: int = 2
    #: More incomplete hours than this in the look-back window makes the backlog check ERROR.
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

    def window(self, now: datetime, first: datetime) -> tuple[datetime, datetime]:
        end = hour_start(now) - timedelta(hours=self.settle_hours)
        return max(first, end - timedelta(hours=self.lookback_hours)), end


@dataclass
class Backlog:
    start: datetime
    end: datetime
    #: Incomplete hours of the window: hour -> enabled billers not written in it.
    gaps: dict[datetime, int]
    #: Biller-hours before the window that failed as busy or unreachable (the retry sensor
    #: mends them however old), and the oldest of them.
    older_biller_hours: int = 0
    oldest: datetime | None = None

    @property
    def biller_hours(self) -> int:
        return sum(self.gaps.values())

    def describe(self) -> str:
        text = (
            f"{len(self.gaps)} hour(s) not fully covered between {self.start:%Y-%m-%d %H:%M} and "
            f"{self.end:%Y-%m-%d %H:%M} UTC ({self.biller_hours} biller-hours missing or failed)"
        )
        if self.older_biller_hours:
            text += (
                f"; {self.older_biller_hours} older biller-hour(s) busy or unreachable since "
                f"{self.oldest:%Y-%m-%d %H:%M} UTC, waiting for the retry sensor"
            )
        return text


def find_backlog(
    warehouse: WarehouseResource,
    billers: list[int],
    now: datetime,
    settings: BacklogSettings,
    first: datetime,
) -> Backlog:
    """Hours where fewer enabled billers are covered than there are: one grouped count in the
    warehouse per 1,000 billers, so a tick costs the same at 5 billers or 5,000.

    A misconfigured shard's billers count as covered here: a backfill would not mend them (their
    coverage check is an ERROR for a person to fix the names)."""
    start, end = settings.window(now, first)
    gaps: dict[datetime, int] = {}
    if billers and start < end:
        covered = warehouse.covered_counts(
            DATAPUMP, HOURLY, start, end, (WRITTEN, MISCONFIGURED), [str(b) for b in billers]
        )
        for hour in HOURLY.starts(start, end):
            missing = len(billers) - covered.get(hour, 0)
            if missing > 0:
                gaps[hour] = missing
    enabled = {str(b) for b in billers}
    older = [
        s
        for e, s in warehouse.ledger_summary(DATAPUMP, HOURLY, RETRYABLE, before=start).items()
        if e in enabled
    ]
    return Backlog(
        start,
        end,
        gaps,
        older_biller_hours=sum(s.windows for s in older),
        oldest=min((s.oldest for s in older), default=None),
    )


def backfill_partitions(hours, start: date) -> list[tuple[AssetKey, str]]:
    """Every asset partition to rebuild for these hours: the hours, then their days and weeks
    (the backfill runs them in dependency order)."""
    out: set[tuple[AssetKey, str]] = set()
    for hour in hours:
        for level in LEVELS:
            key = partition_key(level, start, hour)
            for agg in AGGREGATES:
                out.add((AssetKey(agg.asset_name(level)), key))
    return sorted(out, key=lambda x: (x[0].to_user_string(), x[1]))
