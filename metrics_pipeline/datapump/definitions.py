"""The DataPump family's Dagster objects, for ``Definitions.merge`` in the code location."""

import os
from collections.abc import Mapping

from dagster import Definitions

from metrics_pipeline.datapump.assets import build_datapump_assets
from metrics_pipeline.datapump.assets.checks import build_checks
from metrics_pipeline.datapump.jobs import build_jobs
from metrics_pipeline.datapump.refresh import ChangeSettings
from metrics_pipeline.datapump.schedules import (
    build_reconciliation_schedule,
    build_refresh_schedule,
)
from metrics_pipeline.datapump.sensors.backlog import build_backlog_sensor
from metrics_pipeline.datapump.sensors.refresh_chain import build_refresh_chain_sensor
from metrics_pipeline.datapump.sensors.shard_retry import build_shard_retry_sensor
from metrics_pipeline.partitions import partitions_start
from metrics_pipeline.settings import sensor_interval


def build_datapump_definitions(environ: Mapping[str, str] | None = None) -> Definitions:
    """Assets, checks, jobs, schedules and sensors of the family (its resources, catalog,
    shards and the warehouse, are the code location's)."""
    environ = os.environ if environ is None else environ
    every_s = sensor_interval(environ)
    start = partitions_start(environ)
    every = ChangeSettings.from_env(environ).refresh_minutes
    jobs = build_jobs()
    return Definitions(
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
        ],
    )
