"""Checks where Dagster users look: per-hour coverage, per-hour billers' objectives, the backlog
of the look-back window, and the daily reconciliation of the shards with the warehouse."""

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    MetadataValue,
    asset_check,
)

from metrics_pipeline.assets.partitioned_checks import Verdict, each_partition, run_partition_keys
from metrics_pipeline.clock import as_naive_utc, utc_now
from metrics_pipeline.coverage import DATAPUMP, judge
from metrics_pipeline.datapump.assets.reporting import (
    COVERAGE_ASSET,
    COVERAGE_CHECK,
    CoverageSettings,
    coverage_verdict,
    oldest_not_written,
)
from metrics_pipeline.datapump.backlog import Backlog, BacklogSettings, find_backlog
from metrics_pipeline.datapump.objectives import (
    OBJECTIVES_CHECK,
    ObjectiveSettings,
    check_verdict,
    objective_states,
)
from metrics_pipeline.datapump.pipeline import reconcile
from metrics_pipeline.datapump.shards import CatalogResource, ShardsResource
from metrics_pipeline.partitions import first_window, partitions_def, windows_of
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import HOURLY
from metrics_pipeline.settings import from_env

BACKLOG_CHECK = "hourly_backlog"
RECONCILIATION_CHECK = "reconciliation"


@dataclass(frozen=True)
class ReconcileSettings:
    #: Days before the running hour compared between the shards and the warehouse.
    days: int = 7

    @classmethod
    def from_env(cls, environ=None) -> "ReconcileSettings":
        return from_env(cls, {"days": "METRICS_RECONCILE_DAYS"}, environ)


def backlog_verdict(backlog: Backlog, settings: BacklogSettings) -> dict:
    """passed / severity / metadata shared by the check and the backlog sensor's report."""
    over = len(backlog.gaps) > settings.alert_threshold
    return {
        "passed": not over and not backlog.older_biller_hours,
        "severity": AssetCheckSeverity.ERROR if over else AssetCheckSeverity.WARN,
        "metadata": {
            "incomplete_hours": len(backlog.gaps),
            "missing_biller_hours": backlog.biller_hours,
            "older_retryable_biller_hours": backlog.older_biller_hours,
            "oldest_retryable_hour": backlog.oldest.isoformat() if backlog.oldest else "none",
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
        hours = windows_of(HOURLY, start, run_partition_keys(context))
        ledger = warehouse.read_ledger(DATAPUMP, HOURLY, hours[0], hours[-1] + HOURLY.length)
        enabled = [b.biller_id for b in catalog.enabled_billers()]
        expected = [str(b) for b in enabled]
        oldest = oldest_not_written(warehouse, enabled)
        yield from each_partition(
            context,
            partitions,
            lambda _k, hour, _e: coverage_verdict(
                judge(hour, expected, ledger.get(hour, {})), settings, {}, oldest
            ),
        )

    @asset_check(
        asset=COVERAGE_ASSET,
        name=OBJECTIVES_CHECK,
        partitions_def=partitions,
        description="Per hour, per enabled biller with a BillerObjective row: burn rates of the "
        "error-rate and timeout-rate objectives over the read hourly rows ending with the hour "
        "(page, severity ERROR: 1 h burning >= 14.4x the 30-day budget; ticket, WARN: 6 h and "
        "the last hour >= 6x) and the hour's P95 against P95ResponseTimeObjectiveMs (WARN). "
        "A window under METRICS_OBJECTIVE_MIN_REQUESTS requests (default 100) never fires: "
        "'not enough traffic'. Hours not read are unknown, never zero. Billers without "
        "objectives are listed, not failed. hourly_job runs it after every hourly run.",
    )
    def objectives(
        context: AssetCheckExecutionContext,
        catalog: CatalogResource,
        warehouse: WarehouseResource,
    ):
        settings = ObjectiveSettings.from_env()
        enabled = {b.biller_id: b.name for b in catalog.enabled_billers()}

        ends = [
            as_naive_utc(partitions.time_window_for_partition_key(k).end)
            for k in run_partition_keys(context)
        ]
        # One read for the run's hours: the objectives once, each hour's sums where there are.
        found = objective_states(warehouse, ends, settings.min_requests, enabled)

        def verdict(_key: str, _start: datetime, end: datetime) -> Verdict:
            judged = check_verdict(found[end], enabled, end)
            return Verdict(
                passed=judged["passed"],
                severity=AssetCheckSeverity(judged["severity"]),
                description=judged["description"],
                metadata={
                    k: MetadataValue.json(v) if isinstance(v, dict | list) else v
                    for k, v in judged["metadata"].items()
                },
            )

        yield from each_partition(context, partitions, verdict)

    @asset_check(
        asset=COVERAGE_ASSET,
        name=BACKLOG_CHECK,
        description="Fails (severity ERROR) when more hours than METRICS_BACKLOG_ALERT_THRESHOLD "
        "in the look-back window (METRICS_BACKLOG_LOOKBACK_HOURS, default 168) are not fully "
        "covered; fails with WARN while older biller-hours wait as busy or unreachable (the "
        "retry sensor mends them however old). backlog_sensor evaluates it on every tick and "
        "launches the backfill that mends the window's hours.",
    )
    def hourly_backlog(
        context: AssetCheckExecutionContext,
        catalog: CatalogResource,
        warehouse: WarehouseResource,
    ):
        settings = BacklogSettings.from_env()
        billers = [b.biller_id for b in catalog.enabled_billers()]
        now = utc_now()
        backlog = find_backlog(warehouse, billers, now, settings, first_window(HOURLY, start))
        return AssetCheckResult(**backlog_verdict(backlog, settings))

    @asset_check(
        asset=COVERAGE_ASSET,
        name=RECONCILIATION_CHECK,
        description="Compares every enabled biller's hourly figures (rows, failures, timeouts, "
        "response times) of the last METRICS_RECONCILE_DAYS days (default 7) between its shard "
        "and the warehouse, and marks the cells that differ stale in the coverage ledger: the "
        "next refresh recomputes them. Catches deleted and corrected rows, which no cursor "
        "sees. Runs daily (reconciliation_schedule); WARN when it found something to repair.",
    )
    def reconciliation(
        context: AssetCheckExecutionContext,
        catalog: CatalogResource,
        shards: ShardsResource,
        warehouse: WarehouseResource,
    ):
        settings = ReconcileSettings.from_env()
        now = utc_now()
        end = HOURLY.floor(now)
        begin = max(first_window(HOURLY, start), end - timedelta(days=settings.days))
        found = reconcile(
            catalog, shards, warehouse, begin, end, run_id=context.op_execution_context.run_id
        )
        by_biller: dict[str, int] = {}
        for biller, _ in found.differing:
            by_biller[str(biller)] = by_biller.get(str(biller), 0) + 1
        sample = dict(sorted(found.differing.items())[:20])
        return AssetCheckResult(
            passed=not found.differing and not found.unreachable,
            severity=AssetCheckSeverity.WARN,
            description=(
                f"{len(found.differing)} of {found.cells_compared} biller-hours differed and are "
                "marked stale for the next refresh"
                if found.differing
                else f"{found.cells_compared} biller-hours equal in the shards and the warehouse"
            ),
            metadata={
                "window_start": begin.isoformat(),
                "window_end": end.isoformat(),
                "cells_compared": found.cells_compared,
                "cells_marked_stale": len(found.differing),
                "stale_by_biller": MetadataValue.json(by_biller),
                "sample": MetadataValue.json(
                    {f"{b}@{h:%Y-%m-%dT%H}": w for (b, h), w in sample.items()}
                ),
                "unreachable_shards": MetadataValue.json(found.unreachable),
            },
        )

    return [coverage, objectives, hourly_backlog, reconciliation]
