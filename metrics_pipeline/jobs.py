"""One job per level. In-process execution: each run is a single step, so no subprocess per step."""

from dagster import AssetSelection, define_asset_job, in_process_executor

from metrics_pipeline.partitions import daily_partitions, hourly_partitions, weekly_partitions

hourly_job = define_asset_job(
    "hourly_job",
    selection=AssetSelection.groups("metrics_hourly").without_checks(),
    partitions_def=hourly_partitions,
    executor_def=in_process_executor,
    description="Hourly aggregates for a rectangle of billers x hours "
    "(one shard read per biller-hour).",
)
daily_job = define_asset_job(
    "daily_job",
    selection=AssetSelection.groups("metrics_daily").without_checks(),
    partitions_def=daily_partitions,
    executor_def=in_process_executor,
    description="Daily rollups of the hourly rows.",
)
weekly_job = define_asset_job(
    "weekly_job",
    selection=AssetSelection.groups("metrics_weekly").without_checks(),
    partitions_def=weekly_partitions,
    executor_def=in_process_executor,
    description="Weekly (Sunday to Sunday) rollups of the daily rows.",
)

LEVEL_JOBS = {"hourly": hourly_job, "daily": daily_job, "weekly": weekly_job}
