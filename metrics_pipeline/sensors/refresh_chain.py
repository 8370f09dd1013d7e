"""Daily follows the hourly refresh run, weekly follows daily: three runs per refresh."""

import json
from datetime import UTC, datetime

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from metrics_pipeline.jobs import daily_job, weekly_job
from metrics_pipeline.partitions import billers_partitions
from metrics_pipeline.refresh import LEVEL_TAG, REFRESH_TAG, refresh_request, windows_from_tags

NEXT_LEVEL = {"hourly": "daily", "daily": "weekly"}
DONE = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE]


def _refresh_chain_sensor(context: SensorEvaluationContext):
    cursor = json.loads(context.cursor) if context.cursor else {}
    billers = context.instance.get_dynamic_partitions(billers_partitions.name)
    requests = []
    for level, next_level in NEXT_LEVEL.items():
        since = cursor.get(level)
        records = context.instance.get_run_records(
            filters=RunsFilter(
                tags={LEVEL_TAG: level},
                statuses=DONE,
                updated_after=None if since is None else datetime.fromtimestamp(since, UTC),
            ),
            limit=50,
            order_by="update_timestamp",
            ascending=True,
        )
        for record in records:
            tags = record.dagster_run.tags
            if REFRESH_TAG in tags and billers:
                # Any hour inside a day or week selects that day or week at the next level.
                windows = windows_from_tags(tags)
                requests.append(refresh_request(billers, next_level, windows, tags[REFRESH_TAG]))
            cursor[level] = record.update_timestamp.timestamp()
    return SensorResult(run_requests=requests, cursor=json.dumps(cursor))


def build_refresh_chain_sensor(minimum_interval_seconds: int = 5) -> SensorDefinition:
    return sensor(
        name="refresh_chain_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        jobs=[daily_job, weekly_job],
        description="When a refresh run of one level ends, launches the next level for the same "
        "windows of every biller (also after a partial failure: the other billers' rows are "
        "fresh).",
    )(_refresh_chain_sensor)


refresh_chain_sensor = build_refresh_chain_sensor()
