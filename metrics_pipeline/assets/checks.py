"""The backlog alert, where Dagster users look: a check on the hourly aggregates."""

from datetime import UTC, datetime

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    asset_check,
)

from metrics_pipeline.backlog import STATUS_ASSET, Backlog, BacklogSettings, find_backlog
from metrics_pipeline.partitions import billers_partitions
from metrics_pipeline.resources.warehouse import WarehouseResource

CHECK_NAME = "hourly_backlog"


def backlog_verdict(backlog: Backlog, settings: BacklogSettings) -> dict:
    """passed / severity / metadata shared by the check and the backlog sensor's report."""
    return {
        "passed": len(backlog.gaps) <= settings.alert_threshold,
        "severity": AssetCheckSeverity.ERROR
        if len(backlog.gaps) > settings.alert_threshold
        else AssetCheckSeverity.WARN,
        "metadata": {
            "missing": len(backlog.missing),
            "failed": len(backlog.failed),
            "threshold": settings.alert_threshold,
            "window_start": backlog.start.isoformat(),
            "window_end": backlog.end.isoformat(),
            "summary": backlog.describe(),
        },
    }


def backlog_evaluation(backlog: Backlog, settings: BacklogSettings) -> AssetCheckEvaluation:
    return AssetCheckEvaluation(
        asset_key=STATUS_ASSET, check_name=CHECK_NAME, **backlog_verdict(backlog, settings)
    )


@asset_check(
    asset=STATUS_ASSET,
    name=CHECK_NAME,
    description="Fails (severity ERROR) when more hourly partitions than "
    "METRICS_BACKLOG_ALERT_THRESHOLD are missing or failed in the look-back window "
    "(METRICS_BACKLOG_LOOKBACK_HOURS, default 168). backlog_sensor evaluates it on every tick and "
    "launches the backfill that mends them.",
)
def hourly_backlog(context: AssetCheckExecutionContext, warehouse: WarehouseResource):
    settings = BacklogSettings.from_env()
    billers = context.instance.get_dynamic_partitions(billers_partitions.name)
    backlog = find_backlog(
        context.instance, warehouse, billers, datetime.now(UTC).replace(tzinfo=None), settings
    )
    return AssetCheckResult(**backlog_verdict(backlog, settings))
