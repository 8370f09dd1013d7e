"""The code location: one Definitions object, built when Dagster loads it (not at import)."""

import os

from dagster import Definitions, definitions

from metrics_pipeline.assets.checks import hourly_backlog
from metrics_pipeline.assets.hourly import hourly_aggregates
from metrics_pipeline.assets.rollups import daily_aggregates, weekly_aggregates
from metrics_pipeline.assets.sources import source_specs
from metrics_pipeline.availability.assets import build_availability_definitions
from metrics_pipeline.jobs import daily_job, hourly_job, weekly_job
from metrics_pipeline.resources import build_resources
from metrics_pipeline.schedules import build_refresh_schedule
from metrics_pipeline.sensors.backlog import build_backlog_sensor
from metrics_pipeline.sensors.billers import build_billers_sensor
from metrics_pipeline.sensors.refresh_chain import build_refresh_chain_sensor
from metrics_pipeline.sensors.shard_retry import build_shard_retry_sensor

SENSOR_BUILDERS = (
    build_billers_sensor,
    build_refresh_chain_sensor,
    build_shard_retry_sensor,
    build_backlog_sensor,
)


def build_definitions(environ=None, resolve: bool = False) -> Definitions:
    """The code location. ``resolve=True`` puts plain values in the resources instead of EnvVar
    (for the CLI, whose environment may be given explicitly)."""
    environ = os.environ if environ is None else environ
    every = int(environ.get("METRICS_REFRESH_MINUTES") or 30)
    # One override for every sensor's interval (tests, or a deployment that wants them faster).
    interval = environ.get("METRICS_SENSOR_INTERVAL_S")
    sensors = [b(int(interval)) if interval else b() for b in SENSOR_BUILDERS]
    datapump = Definitions(
        assets=[*source_specs, hourly_aggregates, daily_aggregates, weekly_aggregates],
        jobs=[hourly_job, daily_job, weekly_job],
        schedules=[build_refresh_schedule(every)],
        asset_checks=[hourly_backlog],
        sensors=sensors,
        resources=build_resources(environ, resolve=resolve),
    )
    return Definitions.merge(datapump, build_availability_definitions(environ, resolve))


@definitions
def defs() -> Definitions:
    return build_definitions()
