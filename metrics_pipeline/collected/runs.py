"""Materializing and refreshing the hourly statistics outside the daemon (the CLI's
``materialize --family collected`` and ``refresh --family collected``)."""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from metrics_pipeline.clock import utc_now
from metrics_pipeline.collected.assets import (
    JOB_NAME,
    build_collected_definitions,
    plan_tags,
)
from metrics_pipeline.collected.rules import hour_start
from metrics_pipeline.collected.store import CollectedStore
from metrics_pipeline.partitions import partition_range_tags, partitions_start, require_partitioned
from metrics_pipeline.semantics import HOURLY
from metrics_pipeline.tags import REFRESH_TAG


@dataclass(frozen=True)
class CollectedRun:
    """What one call did: the hours covered, and whether the Dagster run succeeded."""

    first: datetime | None
    last: datetime | None
    hours: int
    success: bool
    error: str | None = None

    @property
    def errors(self) -> list[str]:
        return [self.error] if self.error else []

    def summary(self) -> str:
        if not self.hours:
            return "collected: nothing to refresh"
        return (
            f"collected: {self.hours} hour(s) {self.first:%Y-%m-%d %H:%M} .. "
            f"{self.last:%Y-%m-%d %H:%M} UTC {'written' if self.success else 'FAILED'}"
        )


def _job_and_resources(environ: Mapping[str, str]):
    from dagster import Definitions

    from metrics_pipeline.resources import warehouse_resource

    warehouse = warehouse_resource(environ, resolve=True)
    defs = Definitions.merge(
        build_collected_definitions(environ), Definitions(resources={"warehouse": warehouse})
    )
    return defs.resolve_job_def(JOB_NAME), warehouse


def _execute(job, tags: dict, environ: Mapping[str, str], instance) -> tuple[bool, str | None]:
    from metrics_pipeline.execution import execute, lean_dagster_events, open_instance, step_error

    with lean_dagster_events():
        result = execute(job, instance or open_instance(environ), tags)
    return (True, None) if result.success else (False, step_error(result)[0])


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
    require_partitioned(first, partitions_start(env))
    job, _ = _job_and_resources(env)
    tags = {
        **partition_range_tags(HOURLY, partitions_start(env), first, last),
        "metrics/source": "cli",
    }
    ok, error = _execute(job, tags, env, instance)
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
    tags = {
        **plan_tags(plan, partitions_start(env)),
        REFRESH_TAG: "collected",
        "metrics/source": "cli",
    }
    ok, error = _execute(job, tags, env, instance)
    first, last = plan.hours[0], plan.hours[-1]
    return CollectedRun(first, last, int((last - first) / timedelta(hours=1)) + 1, ok, error)
