"""Daily follows the hourly refresh run, weekly follows daily: three runs per refresh."""

import json
from datetime import UTC, date, datetime

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from metrics_pipeline.datapump.refresh import refresh_request, windows_from_tags
from metrics_pipeline.semantics import LEVELS, LEVELS_BY_NAME
from metrics_pipeline.tags import BILLERS_TAG, LEVEL_TAG, REFRESH_TAG, TOUCHED_TAG

DONE = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE]


def build_refresh_chain_sensor(
    start: date, jobs, minimum_interval_seconds: int = 5
) -> SensorDefinition:
    def _refresh_chain_sensor(context: SensorEvaluationContext):
        if not context.cursor:
            # First tick: chain what ends from now on, not the whole history of refresh runs.
            now = datetime.now(UTC).timestamp()
            return SensorResult(cursor=json.dumps({lv.name: now for lv in LEVELS}))
        cursor = json.loads(context.cursor)
        requests = []
        for level in LEVELS:
            if level.next is None:
                continue
            since = cursor.get(level.name)
            records = context.instance.get_run_records(
                filters=RunsFilter(
                    tags={LEVEL_TAG: level.name},
                    statuses=DONE,
                    updated_after=None if since is None else datetime.fromtimestamp(since, UTC),
                ),
                limit=50,
                order_by="update_timestamp",
                ascending=True,
            )
            for record in records:
                tags = record.dagster_run.tags
                # `metrics-pipeline refresh` runs its own daily and weekly runs.
                if REFRESH_TAG in tags and tags.get("metrics/source") != "cli":
                    # Any hour inside a day or week selects that day or week at the next level;
                    # a retry's billers tag narrows the next level to the same billers.
                    windows = windows_from_tags(LEVELS_BY_NAME[tags[LEVEL_TAG]], start, tags)
                    extra = {k: tags[k] for k in (BILLERS_TAG, TOUCHED_TAG) if k in tags}
                    requests.append(
                        refresh_request(
                            level.next, start, windows, tags[REFRESH_TAG], extra or None
                        )
                    )
                cursor[level.name] = record.update_timestamp.timestamp()
        return SensorResult(run_requests=requests, cursor=json.dumps(cursor))

    return sensor(
        name="refresh_chain_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        jobs=[j for j in jobs if j.name in {lv.job_name for lv in LEVELS[1:]}],
        description="When a refresh run of one level ends, launches the next level for the same "
        "windows (also after a partial failure: the other billers' rows are fresh).",
    )(_refresh_chain_sensor)
