"""One job per level. In-process execution: no subprocess per step."""

from dagster import AssetCheckKey, AssetSelection, define_asset_job, in_process_executor

from metrics_pipeline.semantics import LEVELS, Level

DESCRIPTIONS = {
    "hourly": "Hourly aggregates of every enabled biller for a range of hours.",
    "daily": "Daily rollups of the hourly rows.",
    "weekly": "Weekly (Sunday to Sunday) rollups of the daily rows.",
}


def level_job(level: Level):
    from metrics_pipeline.datapump.assets.reporting import COVERAGE_ASSET
    from metrics_pipeline.datapump.objectives import OBJECTIVES_CHECK

    # The steps log their coverage evaluations themselves; the billers' objectives are judged
    # by their own step after every hourly run, over the run's hours.
    checks = {"hourly": [AssetCheckKey(COVERAGE_ASSET, OBJECTIVES_CHECK)]}.get(level.name, [])
    return define_asset_job(
        level.job_name,
        selection=AssetSelection.groups(level.group_name).without_checks()
        | AssetSelection.checks(*checks),
        executor_def=in_process_executor,
        description=DESCRIPTIONS[level.name],
    )


def build_jobs() -> list:
    return [*(level_job(level) for level in LEVELS), reconciliation_job()]


def reconciliation_job():
    """The daily reconciliation: the check alone, no asset is materialized."""
    from metrics_pipeline.datapump.assets.checks import RECONCILIATION_CHECK
    from metrics_pipeline.datapump.assets.reporting import COVERAGE_ASSET

    return define_asset_job(
        "reconciliation_job",
        selection=AssetSelection.checks(AssetCheckKey(COVERAGE_ASSET, RECONCILIATION_CHECK)),
        executor_def=in_process_executor,
        description="Compares the last days' hourly figures of every shard with the warehouse and "
        "marks the cells that differ for the next refresh.",
    )
