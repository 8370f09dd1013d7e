"""Requests again the partitions that failed because a shard was busy or could not be reached.

Busy: once the biller's Processing flag reads false. Unreachable: with exponential backoff, once
the shard answers. Cheap checks (one small SELECT per candidate biller), a bounded look-back,
at most one request per failed run and biller (run_key), never while a retry of the same biller
is in flight, and a cap per tick so that a restart after downtime does not start a storm.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from metrics_pipeline.jobs import hourly_job
from metrics_pipeline.partitions import parse_partition_key
from metrics_pipeline.refresh import (
    LEVEL_TAG,
    RANGE_END,
    RANGE_START,
    REFRESH_TAG,
    rectangle_tags,
)
from metrics_pipeline.resources.databases import CatalogResource, ShardsResource
from metrics_pipeline.resources.engines import DatabaseUnreachable, ShardUnreachable
from metrics_pipeline.settings import from_env

RETRY_FLAG = "metrics/retry"
RETRY_TAG = "metrics/retry_of"
ATTEMPT_TAG = "metrics/attempt"
BUSY_TAG = "metrics/busy_billers"
UNREACHABLE_TAG = "metrics/unreachable_billers"
IN_FLIGHT = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


@dataclass(frozen=True)
class RetrySettings:
    lookback_hours: int = 48
    max_requests_per_tick: int = 10
    backoff_base_s: int = 60
    backoff_max_s: int = 3600
    max_attempts: int = 8

    @classmethod
    def from_env(cls, environ=None) -> "RetrySettings":
        return from_env(
            cls,
            {
                "lookback_hours": "METRICS_RETRY_LOOKBACK_HOURS",
                "max_requests_per_tick": "METRICS_RETRY_MAX_PER_TICK",
                "backoff_base_s": "METRICS_RETRY_BACKOFF_S",
            },
            environ,
        )

    def backoff(self, attempt: int) -> timedelta:
        return timedelta(seconds=min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1)))


def _billers(tags, key: str) -> list[int]:
    return [int(b) for b in tags.get(key, "").split(",") if b]


def _hours(tags) -> list[datetime] | None:
    """First and last hour a failed hourly run covered, from its range or partition tag."""
    if RANGE_START in tags and RANGE_END in tags:
        return [parse_partition_key(tags[t])[1] for t in (RANGE_START, RANGE_END)]
    if "dagster/partition" in tags:
        hour = parse_partition_key(tags["dagster/partition"])[1]
        return [hour, hour]
    return None


def _retry_biller(tags) -> int | None:
    return parse_partition_key(tags[RANGE_START])[0] if RANGE_START in tags else None


def retry_request(run_id: str, biller: int, hours: list[datetime], attempt: int, reason: str):
    return RunRequest(
        run_key=f"retry-{run_id}-{biller}",
        job_name=hourly_job.name,
        tags={
            **rectangle_tags([str(biller)], "hourly", hours),
            RETRY_FLAG: "true",
            RETRY_TAG: run_id,
            ATTEMPT_TAG: str(attempt),
            "metrics/retry_reason": reason,
            # Daily and weekly follow through refresh_chain_sensor.
            REFRESH_TAG: f"retry-{run_id[:8]}-{biller}",
            LEVEL_TAG: "hourly",
        },
    )


def _shard_retry_sensor(
    context: SensorEvaluationContext, catalog: CatalogResource, shards: ShardsResource
):
    settings = RetrySettings.from_env()
    now = datetime.now(UTC)
    records = context.instance.get_run_records(
        filters=RunsFilter(
            statuses=[DagsterRunStatus.FAILURE],
            updated_after=now - timedelta(hours=settings.lookback_hours),
        ),
        limit=500,
        order_by="update_timestamp",
        ascending=True,
    )
    candidates = [
        r
        for r in records
        if BUSY_TAG in r.dagster_run.tags or UNREACHABLE_TAG in r.dagster_run.tags
    ]
    if not candidates:
        return SkipReason("no run failed for a busy or unreachable shard in the look-back window")
    retries = context.instance.get_runs(
        filters=RunsFilter(
            tags={RETRY_FLAG: "true"}, updated_after=now - timedelta(hours=settings.lookback_hours)
        ),
        limit=1000,
    )
    already = {(r.tags.get(RETRY_TAG), _retry_biller(r.tags)) for r in retries}
    in_flight = {_retry_biller(r.tags) for r in retries if r.status in IN_FLIGHT}
    try:
        shard_of = {b.biller_id: b.shard for b in catalog.enabled_billers()}
    except DatabaseUnreachable as exc:
        return SkipReason(f"catalog unreachable, retrying later: {exc.reason}")

    requests, waiting = [], []
    for record in candidates:
        run = record.dagster_run
        hours = _hours(run.tags)
        if hours is None:
            continue
        attempt = int(run.tags.get(ATTEMPT_TAG, "0")) + 1
        failed_at = record.end_time or record.update_timestamp.timestamp()
        for reason, key in (("shard busy", BUSY_TAG), ("shard unreachable", UNREACHABLE_TAG)):
            for biller in _billers(run.tags, key):
                if (run.run_id, biller) in already or biller in in_flight:
                    continue
                if biller not in shard_of:
                    continue
                if attempt > settings.max_attempts:
                    continue
                if (
                    reason == "shard unreachable"
                    and now.timestamp() < failed_at + settings.backoff(attempt).total_seconds()
                ):
                    waiting.append(biller)
                    continue
                try:
                    if shards.busy_billers(shard_of[biller], [biller]):
                        waiting.append(biller)
                        continue
                except ShardUnreachable:
                    waiting.append(biller)
                    continue
                requests.append(retry_request(run.run_id, biller, hours, attempt, reason))
                in_flight.add(biller)
                if len(requests) >= settings.max_requests_per_tick:
                    return requests
    if not requests:
        return SkipReason(
            f"waiting for billers {sorted(set(waiting))}" if waiting else "nothing to retry"
        )
    return requests


def build_shard_retry_sensor(minimum_interval_seconds: int = 60) -> SensorDefinition:
    return sensor(
        name="shard_retry_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        jobs=[hourly_job],
        description="Re-requests the hourly partitions that failed because a shard was busy "
        "(once its "
        "Processing flag clears) or unreachable (with exponential backoff, once it answers).",
    )(_shard_retry_sensor)


shard_retry_sensor = build_shard_retry_sensor()
