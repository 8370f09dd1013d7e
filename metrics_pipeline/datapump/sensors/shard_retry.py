"""Requests again the biller-hours the ledger says were not written because a shard was busy or
could not be reached, computing only those billers.

Busy: once the biller's Processing flag reads false. Unreachable: with exponential backoff, once
the shard answers. However old the entry is: a biller whose flag stayed set for weeks is mended
once it clears. Cheap checks (one grouped ledger read per tick, one small SELECT per waiting
biller), never while a retry of the same biller is in flight, and caps per tick (runs, and hours
per biller) so that a restart after downtime does not start a storm. Misconfigured or failed
billers are not retried by the sensor.
"""

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from metrics_pipeline.clock import utc_now
from metrics_pipeline.coverage import BUSY, DATAPUMP, RETRYABLE, UNREACHABLE
from metrics_pipeline.datapump.refresh import range_tags
from metrics_pipeline.datapump.shards import CatalogResource, ShardsResource
from metrics_pipeline.partitions import contiguous_runs
from metrics_pipeline.resources.engines import DatabaseUnreachable, ShardUnreachable
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import HOURLY
from metrics_pipeline.settings import from_env
from metrics_pipeline.tags import ATTEMPT_TAG, BILLERS_TAG, REFRESH_TAG, RETRY_FLAG

IN_FLIGHT = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


@dataclass(frozen=True)
class RetrySettings:
    max_requests_per_tick: int = 10
    #: Hours of one biller retried per tick, oldest first: a biller busy for months is mended a
    #: month at a time.
    max_hours_per_tick: int = 31 * 24
    backoff_base_s: int = 60
    backoff_max_s: int = 3600
    max_attempts: int = 8

    @classmethod
    def from_env(cls, environ=None) -> "RetrySettings":
        return from_env(
            cls,
            {
                "max_requests_per_tick": "METRICS_RETRY_MAX_PER_TICK",
                "max_hours_per_tick": "METRICS_RETRY_MAX_HOURS",
                "backoff_base_s": "METRICS_RETRY_BACKOFF_S",
            },
            environ,
        )

    def backoff(self, attempt: int) -> timedelta:
        return timedelta(seconds=min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1)))


def retry_request(
    start: date, biller: int, first: datetime, last: datetime, attempt: int, reason: str
) -> RunRequest:
    return RunRequest(
        run_key=f"retry-{biller}-{first:%Y%m%d%H}-{last:%Y%m%d%H}-{attempt}",
        job_name=HOURLY.job_name,
        tags={
            **range_tags(HOURLY, start, first, last),
            BILLERS_TAG: str(biller),
            RETRY_FLAG: "true",
            ATTEMPT_TAG: str(attempt),
            "metrics/retry_reason": reason,
            # Daily and weekly follow through refresh_chain_sensor, for this biller only.
            REFRESH_TAG: f"retry-{biller}-{first:%Y%m%d%H}-{attempt}",
        },
    )


def build_shard_retry_sensor(
    start: date, jobs, minimum_interval_seconds: int = 60
) -> SensorDefinition:
    def _shard_retry_sensor(
        context: SensorEvaluationContext,
        catalog: CatalogResource,
        shards: ShardsResource,
        warehouse: WarehouseResource,
    ):
        settings = RetrySettings.from_env()
        # Per biller: attempts so far and when the last retry was requested (for the backoff).
        state = json.loads(context.cursor) if context.cursor else {}
        now = utc_now()
        # Billers with hours of any age whose latest read failed as busy or unreachable: one
        # grouped read (a row per biller), the hours themselves only for the billers retried.
        summary = warehouse.ledger_summary(DATAPUMP, HOURLY, RETRYABLE)
        waiting_billers = {int(e): s for e, s in summary.items() if e.isdigit()}
        # Billers whose retry succeeded are forgotten, so a later failure starts from attempt 1.
        state = {b: s for b, s in state.items() if int(b) in waiting_billers}
        if not waiting_billers:
            return SensorResult(
                skip_reason="no biller-hours failed as busy or unreachable",
                cursor=json.dumps(state),
            )
        retries = context.instance.get_runs(
            filters=RunsFilter(tags={RETRY_FLAG: "true"}, statuses=IN_FLIGHT), limit=1000
        )
        in_flight = {int(r.tags[BILLERS_TAG]) for r in retries if BILLERS_TAG in r.tags}
        try:
            shard_of = {b.biller_id: b.shard for b in catalog.enabled_billers()}
        except DatabaseUnreachable as exc:
            return SkipReason(f"catalog unreachable, retrying later: {exc.reason}")

        requests, waiting = [], []
        for biller, waiting_since in sorted(waiting_billers.items()):
            if biller in in_flight or biller not in shard_of:
                continue
            attempts, last_at = state.get(str(biller), [0, 0.0])
            if attempts >= settings.max_attempts:
                continue
            reason = UNREACHABLE if UNREACHABLE in waiting_since.states else BUSY
            if (
                reason == UNREACHABLE
                and attempts
                and (now.timestamp() < last_at + settings.backoff(attempts).total_seconds())
            ):
                waiting.append(biller)
                continue
            try:
                if shards.busy_billers(shard_of[biller], [biller]):
                    waiting.append(biller)
                    continue
            except ShardUnreachable:
                waiting.append(biller)
                state[str(biller)] = [attempts + 1, now.timestamp()]
                continue
            hours = warehouse.read_ledger(
                DATAPUMP,
                HOURLY,
                states=RETRYABLE,
                entities=[str(biller)],
                limit=settings.max_hours_per_tick,
            )
            for first, last in contiguous_runs(HOURLY, hours):
                requests.append(retry_request(start, biller, first, last, attempts + 1, reason))
            state[str(biller)] = [attempts + 1, now.timestamp()]
            if len(requests) >= settings.max_requests_per_tick:
                break
        if not requests:
            skip = f"waiting for billers {sorted(set(waiting))}" if waiting else "nothing to retry"
            return SensorResult(skip_reason=skip, cursor=json.dumps(state))
        return SensorResult(run_requests=requests, cursor=json.dumps(state))

    return sensor(
        name="shard_retry_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        jobs=[j for j in jobs if j.name == HOURLY.job_name],
        description="Re-requests, for only the billers concerned, the hours the coverage ledger "
        "says were not written because a shard was busy (once its Processing flag clears) or "
        "unreachable (with exponential backoff, once it answers).",
    )(_shard_retry_sensor)
