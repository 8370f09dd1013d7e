"""The DataPump family's Dagster objects, for ``Definitions.merge`` in the code location."""

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


def build_datapump_definitions(environ: Mapping[str, str], sensor_interval: dict) -> Definitions:
    """Assets, checks, jobs, schedules and sensors of the family (its resources, catalog,
    shards and the warehouse, are the code location's). ``sensor_interval`` is the platform's
    override of every sensor's interval (empty for each sensor's own)."""
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
            build_refresh_chain_sensor(start, jobs, **sensor_interval),
            build_shard_retry_sensor(start, jobs, **sensor_interval),
            build_backlog_sensor(start, **sensor_interval),
        ],
    )
