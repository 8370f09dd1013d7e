"""Materializing and refreshing the hourly statistics outside the daemon (the CLI's
``materialize --family collected`` and ``refresh --family collected``)."""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from metrics_pipeline.collected.assets import (
    HOUR_KEY_FORMAT,
    JOB_NAME,
    RANGE_END,
    RANGE_START,
    build_collected_definitions,
    plan_tags,
)
from metrics_pipeline.collected.rules import hour_start, utc_now
from metrics_pipeline.collected.store import CollectedStore


@dataclass(frozen=True)
class CollectedRun:
    """What one call did: the hours covered, and whether the Dagster run succeeded."""

    first: datetime | None
    last: datetime | None
    hours: int
    success: bool
    error: str | None = None


def _job_and_resources(environ: Mapping[str, str]):
    from dagster import Definitions

    from metrics_pipeline.resources import build_resources

    family = build_collected_definitions(environ)
    warehouse = build_resources(environ, resolve=True)["warehouse"]
    defs = Definitions(**family, resources={"warehouse": warehouse})
    return defs.resolve_job_def(JOB_NAME), warehouse


def _instance(environ: Mapping[str, str], instance):
    from dagster import DagsterInstance

    if instance is not None:
        return instance
    return DagsterInstance.get() if environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()


def _execute(job, tags: dict, instance) -> tuple[bool, str | None]:
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    result = job.execute_in_process(
        instance=instance, tags=tags, run_config=quiet, raise_on_error=False
    )
    if result.success:
        return True, None
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error:
            return False, event.step_failure_data.error.message.strip().splitlines()[0]
    return False, "run failed"


def materialize_collected(
    start: datetime, end: datetime, environ: Mapping[str, str] | None = None, instance=None
) -> CollectedRun:
    """Recompute CollectedMetricHourly for the hours in [start, end) (naive UTC; widened to
    whole hours, capped at the running hour), as one Dagster run. Leaves the cursor alone."""
    env = os.environ if environ is None else environ
    first = hour_start(start)
    last = min(hour_start(end - timedelta(microseconds=1)), hour_start(utc_now()))
    if last < first:
        raise ValueError(f"empty window: {start.isoformat()} .. {end.isoformat()}")
    job, _ = _job_and_resources(env)
    earliest = job.partitions_def.get_first_partition_window().start.replace(tzinfo=None)
    if first < earliest:
        raise ValueError(f"start {first.isoformat()} is before the first partition {earliest}")
    tags = {
        RANGE_START: first.strftime(HOUR_KEY_FORMAT),
        RANGE_END: last.strftime(HOUR_KEY_FORMAT),
        "metrics/source": "cli",
    }
    ok, error = _execute(job, tags, _instance(env, instance))
    return CollectedRun(first, last, int((last - first) / timedelta(hours=1)) + 1, ok, error)


def refresh_collected(environ: Mapping[str, str] | None = None, instance=None) -> CollectedRun:
    """Re-aggregate the hours that received rows since the cursor (one run over their range)
    and move the cursor; nothing to do is a success with 0 hours."""
    env = os.environ if environ is None else environ
    job, warehouse = _job_and_resources(env)
    store = CollectedStore(warehouse.engine(), warehouse.db_schema)
    store.ensure_schema()
    plan = store.plan_refresh()
    if not plan.hours:
        return CollectedRun(None, None, 0, True)
    tags = {**plan_tags(plan), "metrics/refresh": "collected", "metrics/source": "cli"}
    ok, error = _execute(job, tags, _instance(env, instance))
    first, last = plan.hours[0], plan.hours[-1]
    return CollectedRun(first, last, int((last - first) / timedelta(hours=1)) + 1, ok, error)
