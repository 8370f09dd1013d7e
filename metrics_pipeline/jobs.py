"""One job per level. In-process execution: each run is a single step, so no subprocess per step."""

from dagster import AssetSelection, define_asset_job, in_process_executor

from metrics_pipeline.semantics import LEVELS, Level

DESCRIPTIONS = {
    "hourly": "Hourly aggregates of every enabled biller for a range of hours.",
    "daily": "Daily rollups of the hourly rows.",
    "weekly": "Weekly (Sunday to Sunday) rollups of the daily rows.",
}


def level_job(level: Level):
    return define_asset_job(
        level.job_name,
        selection=AssetSelection.groups(level.group_name).without_checks(),
        executor_def=in_process_executor,
        description=DESCRIPTIONS[level.name],
    )


def build_jobs() -> list:
    return [level_job(level) for level in LEVELS]
