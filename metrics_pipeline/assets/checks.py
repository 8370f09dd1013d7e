"""Checks where Dagster users look: per-hour coverage, and the backlog of the look-back window."""

from datetime import UTC, date, datetime

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    asset_check,
)

from metrics_pipeline.assets.reporting import (
    COVERAGE_ASSET,
    COVERAGE_CHECK,
    CoverageSettings,
    coverage_evaluation,
)
from metrics_pipeline.backlog import Backlog, BacklogSettings, find_backlog
from metrics_pipeline.coverage import DATAPUMP, judge
from metrics_pipeline.partitions import first_window, partitions_def, windows_of
from metrics_pipeline.resources.databases import CatalogResource
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import HOURLY

BACKLOG_CHECK = "hourly_backlog"


def backlog_verdict(backlog: Backlog, settings: BacklogSettings) -> dict:
    """passed / severity / metadata shared by the check and the backlog sensor's report."""
    over = len(backlog.gaps) > settings.alert_threshold
    return {
        "passed": not over,
        "severity": AssetCheckSeverity.ERROR if over else AssetCheckSeverity.WARN,
        "metadata": {
            "incomplete_hours": len(backlog.gaps),
            "missing_biller_hours": backlog.biller_hours,
            "threshold": settings.alert_threshold,
            "window_start": backlog.start.isoformat(),
            "window_end": backlog.end.isoformat(),
            "summary": backlog.describe(),
        },
    }


def backlog_evaluation(backlog: Backlog, settings: BacklogSettings) -> AssetCheckEvaluation:
    return AssetCheckEvaluation(
        asset_key=COVERAGE_ASSET, check_name=BACKLOG_CHECK, **backlog_verdict(backlog, settings)
    )


def build_checks(start: date) -> list[AssetChecksDefinition]:
    partitions = partitions_def(HOURLY, start)

    @asset_check(
        asset=COVERAGE_ASSET,
        name=COVERAGE_CHECK,
        partitions_def=partitions,
        description="Per hour: passes when every enabled biller's rows for the hour are written "
        "(coverage ledger); fails naming the busy, unreachable or failed billers and why "
        "(WARN; ERROR above METRICS_COVERAGE_ALERT_BILLERS). Every hourly run reports it.",
    )
    def coverage(
        context: AssetCheckExecutionContext,
        catalog: CatalogResource,
        warehouse: WarehouseResource,
    ):
        settings = CoverageSettings.from_env()
        keys = list(context.partition_keys) if context.has_partition_key_range else []
        keys = keys or [context.partition_key]
        hours = windows_of(HOURLY, start, keys)
        ledger = warehouse.read_ledger(DATAPUMP, HOURLY, hours[0], hours[-1] + HOURLY.length)
        expected = [str(b.biller_id) for b in catalog.enabled_billers()]
        verdicts = [judge(h, expected, ledger.get(h, {})) for h in hours]
        for key, verdict in zip(keys[:-1], verdicts[:-1], strict=True):
            context.log_event(coverage_evaluation(verdict, key, settings, {}))
        last = coverage_evaluation(verdicts[-1], keys[-1], settings, {})
        return AssetCheckResult(
            passed=last.passed,
            severity=last.severity,
            description=last.description,
            metadata=last.metadata,
        )

    @asset_check(
        asset=COVERAGE_ASSET,
        name=BACKLOG_CHECK,
        description="Fails (severity ERROR) when more hours than METRICS_BACKLOG_ALERT_THRESHOLD "
        "in the look-back window (METRICS_BACKLOG_LOOKBACK_HOURS, default 168) are not fully "
        "covered. backlog_sensor evaluates it on every tick and launches the backfill that "
        "mends them.",
    )
    def hourly_backlog(
        context: AssetCheckExecutionContext,
        catalog: CatalogResource,
        warehouse: WarehouseResource,
    ):
        settings = BacklogSettings.from_env()
        billers = [b.biller_id for b in catalog.enabled_billers()]
        now = datetime.now(UTC).replace(tzinfo=None)
        backlog = find_backlog(warehouse, billers, now, settings, first_window(HOURLY, start))
        return AssetCheckResult(**backlog_verdict(backlog, settings))

    return [coverage, hourly_backlog]
