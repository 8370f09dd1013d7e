"""The code location: one Definitions object, built when Dagster loads it (not at import)."""

import os

from dagster import Definitions, definitions, in_process_executor

from metrics_pipeline.alerts.settings import AlertSettings
from metrics_pipeline.availability.assets import build_availability_definitions
from metrics_pipeline.collected.assets import build_collected_definitions
from metrics_pipeline.datapump.definitions import build_datapump_definitions
from metrics_pipeline.datapump.shards import datapump_resources
from metrics_pipeline.execution import build_dead_runs_sensor
from metrics_pipeline.resources import warehouse_resource
from metrics_pipeline.retention import build_retention_definitions
from metrics_pipeline.sensors.alerts import build_alerts_sensor
from metrics_pipeline.settings import sensor_interval


def build_resources(environ=None, resolve: bool = False) -> dict:
    """The code location's resources: the platform's warehouse and each family's own."""
    return {
        "warehouse": warehouse_resource(environ, resolve),
        **datapump_resources(environ, resolve),
    }


def build_definitions(environ=None, resolve: bool = False) -> Definitions:
    """The code location. ``resolve=True`` puts plain values in the resources instead of EnvVar
    (for the CLI, whose environment may be given explicitly)."""
    environ = os.environ if environ is None else environ
    every_s = sensor_interval(environ)
    platform = Definitions(
        sensors=[
            build_dead_runs_sensor(**every_s),
            build_alerts_sensor(AlertSettings.from_env(environ)),
        ],
        resources=build_resources(environ, resolve=resolve),
        # Every job, the implicit asset job of backfills and UI launches included, runs its
        # steps in the run's own process: one process (one pod with dagster-k8s) per run.
        executor=in_process_executor,
    )
    # Each family's Definitions, merged the same way.
    return Definitions.merge(
        build_datapump_definitions(environ),
        build_availability_definitions(environ, resolve),
        build_collected_definitions(environ),
        build_retention_definitions(environ),
        platform,
    )


@definitions
def defs() -> Definitions:
    return build_definitions()
