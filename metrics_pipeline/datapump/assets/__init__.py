"""The DataPump family's assets, built for a partitions start (see ``build_datapump_assets``)."""

from datetime import date

from metrics_pipeline.datapump.assets.hourly import build_hourly_aggregates
from metrics_pipeline.datapump.assets.rollups import build_rollup
from metrics_pipeline.datapump.assets.sources import source_specs
from metrics_pipeline.semantics import DAILY, WEEKLY


def build_datapump_assets(start: date) -> list:
    """External raw tables, then the hourly, daily and weekly multi-assets."""
    return [
        *source_specs,
        build_hourly_aggregates(start),
        build_rollup(DAILY, start),
        build_rollup(WEEKLY, start),
    ]
