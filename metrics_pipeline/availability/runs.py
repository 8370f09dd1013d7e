"""The availability family's materialize and refresh outside the daemon (the CLI's ``materialize
--family availability`` and ``refresh --family availability``), as Dagster runs of the family's
two jobs: the runs, the partitions and the checks show in the UI like the daemon's."""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from metrics_pipeline.availability import pipeline
from metrics_pipeline.availability.assets import (
    DAILY_JOB,
    HOURLY_JOB,
    MINUTE,
    build_availability_definitions,
)
from metrics_pipeline.availability.settings import AvailabilitySettings
from metrics_pipeline.clock import as_naive_utc, utc_now
from metrics_pipeline.partitions import (
    contiguous_runs,
    partition_range_tags,
    partitions_start,
    require_partitioned,
)
from metrics_pipeline.semantics import DAILY, HOURLY


@dataclass
class AvailabilityRuns:
    """What one command did: the hours and days it covered, in how many runs, what they read."""

    hours: list[datetime] = field(default_factory=list)
    days: list[datetime] = field(default_factory=list)
    runs: int = 0
    events_read: int = 0
    kept: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        if not self.hours:
            return "availability: nothing to refresh (no hour folder changed)"
        return (
            f"availability: {len(self.hours)} hour(s) {self.hours[0]:%Y-%m-%d %H:%M} .. "
            f"{self.hours[-1]:%Y-%m-%d %H:%M} UTC ({self.events_read} events read, {self.kept} "
            f"kept), {len(self.days)} day(s), {self.runs} run(s)"
            + (f", {len(self.errors)} FAILED" if self.errors else "")
        )


def materialize_availability(
    start: datetime, end: datetime, environ: Mapping[str, str] | None = None, instance=None
) -> AvailabilityRuns:
    """Minute -> daily -> published for every hour of the whole days that [start, end) touches,
    up to the running hour (a day's rows are the sums of all its hours, so every hour partition
    of its days is materialized with it). Re-running it on the same files changes nothing."""
    env = os.environ if environ is None else environ
    start, end = as_naive_utc(start), as_naive_utc(end)
    running = HOURLY.floor(utc_now())
    days = DAILY.starts(start, end)
    hours = (
        [h for h in HOURLY.starts(days[0], days[-1] + DAILY.length) if h <= running] if days else []
    )
    if not hours:
        raise ValueError(f"empty window: {start.isoformat()} .. {end.isoformat()}")
    return run_hours(hours, env, instance)


def refresh_availability(
    environ: Mapping[str, str] | None = None, instance=None, now: datetime | None = None
) -> AvailabilityRuns:
    """One change-driven cycle: the hours of the look-back whose files differ from the cursor,
    then their days; nothing else is touched."""
    env = os.environ if environ is None else environ
    now = as_naive_utc(now or datetime.now(UTC))
    hours = pipeline.plan_refresh(pipeline.open_store(env), AvailabilitySettings.from_env(env), now)
    return run_hours(hours, env, instance) if hours else AvailabilityRuns()


def run_hours(hours: list[datetime], environ: Mapping[str, str], instance=None) -> AvailabilityRuns:
    """One run of the hourly job per contiguous span of ``hours``, then one run of the daily
    job per contiguous span of their days."""
    from metrics_pipeline.execution import execute, lean_dagster_events, open_instance, step_error

    first_day = partitions_start(environ)
    if hours:
        require_partitioned(min(hours), first_day)
    defs = build_availability_definitions(environ, resolve=True)
    instance = instance or open_instance(environ)
    out = AvailabilityRuns(hours=sorted(hours), days=sorted({DAILY.floor(h) for h in hours}))
    with lean_dagster_events():
        for job_name, level, windows in (
            (HOURLY_JOB, HOURLY, out.hours),
            (DAILY_JOB, DAILY, out.days),
        ):
            job = defs.resolve_job_def(job_name)
            for lo, hi in contiguous_runs(level, windows):
                tags = {
                    **partition_range_tags(level, first_day, lo, hi),
                    "metrics/source": "cli",
                }
                result = execute(job, instance, tags)
                out.runs += 1
                if not result.success:
                    out.errors.append(step_error(result)[0])
                elif level is HOURLY:
                    # Each hour partition's event carries that hour's figures: sum them.
                    for event in result.asset_materializations_for_node(MINUTE.path[-1]):
                        out.events_read += int(event.metadata["events_read"].value)
                        out.kept += int(event.metadata["kept"].value)
    return out
