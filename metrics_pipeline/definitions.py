"""The code location: one Definitions object, built when Dagster loads it (not at import)."""

import os

from dagster import Definitions, definitions, in_process_executor

from metrics_pipeline.alerts.settings import AlertSettings
from metrics_pipeline.assets import build_datapump_assets
from metrics_pipeline.assets.checks import build_checks
from metrics_pipeline.availability.assets import build_availability_definitions
from metrics_pipeline.collected.assets import build_collected_definitions
from metrics_pipeline.execution import build_dead_runs_sensor
from metrics_pipeline.jobs import build_jobs
from metrics_pipeline.partitions import partitions_start
from metrics_pipeline.resources import build_resources
from metrics_pipeline.retention import build_retention_definitions
from metrics_pipeline.schedules import build_reconciliation_schedule, build_refresh_schedule
from metrics_pipeline.sensors.alerts import build_alerts_sensor
from metrics_pipeline.sensors.backlog import build_backlog_sensor
from metrics_pipeline.sensors.refresh_chain import build_refresh_chain_sensor
from metrics_pipeline.sensors.shard_retry import build_shard_retry_sensor


def build_definitions(environ=None, resolve: bool = False) -> Definitions:
    """The code location. ``resolve=True`` puts plain values in the resources instead of EnvVar
    (for the CLI, whose environment may be given explicitly)."""
    environ = os.environ if environ is None else environ
    start = partitions_start(environ)
    every = int(environ.get("METRICS_REFRESH_MINUTES") or 30)
    # One override for every sensor's interval (tests, or a deployment that wants them faster).
    interval = environ.get("METRICS_SENSOR_INTERVAL_S")
    every_s = {"minimum_interval_seconds": int(interval)} if interval else {}
    jobs = build_jobs()
    datapump = Definitions(
        assets=build_datapump_assets(start),
        jobs=jobs,
        schedules=[
            build_refresh_schedule(start, every),
            build_reconciliation_schedule(environ.get("METRICS_RECONCILE_CRON") or "15 2 * * *"),
        ],
        asset_checks=build_checks(start),
        sensors=[
            build_refresh_chain_sensor(start, jobs, **every_s),
            build_shard_retry_sensor(start, jobs, **every_s),
            build_backlog_sensor(start, **every_s),
            build_dead_runs_sensor(**every_s),
            build_alerts_sensor(AlertSettings.from_env(environ)),
        ],
        resources=build_resources(environ, resolve=resolve),
    )
    # Each family's Definitions, merged the same way. Every job, the implicit asset job of
    # backfills and UI launches included, runs its steps in the run's own process: one process
    # (one pod with dagster-k8s) per run, none per step.
    return Definitions.merge(
        datapump,
        build_availability_definitions(environ, resolve),
        build_collected_definitions(environ),
        build_retention_definitions(environ),
        Definitions(executor=in_process_executor),
    )


@definitions
def defs() -> Definitions:
    return build_definitions()
