"""How an aggregation run ends: the job log row, coverage checks, metadata, or a clear failure."""

from collections import defaultdict
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime

from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    Failure,
    MaterializeResult,
    MetadataValue,
)

from metrics_pipeline.assets.partitioned_checks import Verdict
from metrics_pipeline.clock import utc_second
from metrics_pipeline.coverage import (
    DATAPUMP,
    MISCONFIGURED,
    NOT_WRITTEN,
    Coverage,
    judge,
    severity_is_error,
)
from metrics_pipeline.dagster_internal import materialization_targets
from metrics_pipeline.datapump.pipeline import Outcome
from metrics_pipeline.partitions import partition_key
from metrics_pipeline.resources.engines import ConfigurationError, DatabaseUnreachable
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import HOURLY, Level
from metrics_pipeline.settings import from_env
from metrics_pipeline.sql.warehouse import AGGREGATES, ERROR_RATE

COVERAGE_CHECK = "coverage"
#: The hourly asset that carries the coverage check (and the backlog check).
COVERAGE_ASSET = AssetKey(f"{ERROR_RATE.asset_stem}_{HOURLY.name}")


@dataclass(frozen=True)
class CoverageSettings:
    #: More billers than this missing from one hour makes its coverage check an ERROR (pages).
    alert_threshold: int = 10

    @classmethod
    def from_env(cls, environ=None) -> "CoverageSettings":
        return from_env(cls, {"alert_threshold": "METRICS_COVERAGE_ALERT_BILLERS"}, environ)


@contextmanager
def plain_failures():
    """An unreachable database or a bad setting fails the step with one readable line (and the
    transaction in flight rolls back), instead of a wrapped driver traceback."""
    try:
        yield
    except (DatabaseUnreachable, ConfigurationError) as exc:
        raise Failure(description=str(exc), metadata={"error": type(exc).__name__}) from exc


def oldest_not_written(warehouse: WarehouseResource, enabled: Iterable[int]) -> datetime | None:
    """The oldest hour, however old, whose latest computation left an enabled biller not
    written (busy, unreachable, misconfigured or failed)."""
    wanted = {str(b) for b in enabled}
    summary = warehouse.ledger_summary(DATAPUMP, HOURLY, NOT_WRITTEN)
    return min((s.oldest for e, s in summary.items() if e in wanted), default=None)


def coverage_verdict(
    coverage: Coverage,
    settings: CoverageSettings,
    undated: dict[int, int],
    oldest_missing: datetime | None = None,
    now: datetime | None = None,
    empty_shards: dict[str, list[int]] | None = None,
) -> Verdict:
    """The coverage check's judgement of one hour partition; ``oldest_missing`` (the oldest
    hour of any biller not written) says how long the oldest gap has waited."""
    gaps = {entity: f"{state}: {why}" for entity, (state, why) in sorted(coverage.gaps.items())}
    age = {}
    if oldest_missing is not None:
        hours = int(((now or utc_second()) - oldest_missing) / HOURLY.length)
        age = {
            "oldest_missing_hour": oldest_missing.isoformat(),
            "oldest_missing_age_hours": max(0, hours),
        }
    return Verdict(
        passed=coverage.complete,
        # A misconfigured shard is not retried: it needs a person, so it is an ERROR at once.
        severity=AssetCheckSeverity.ERROR
        if severity_is_error(len(coverage.gaps), settings.alert_threshold)
        or MISCONFIGURED in coverage.by_state()
        else AssetCheckSeverity.WARN,
        description=coverage.describe(),
        metadata={
            # Text, not numbers: the UI plots numeric metadata, and these are (nearly) constant.
            "expected_billers": MetadataValue.text(str(coverage.expected)),
            "written_billers": coverage.written,
            "missing_billers": MetadataValue.json(gaps),
            # Rows of the billers' shards whose CreatedDate is NULL or not a timestamp: they
            # belong to no hour, so they are counted here instead of vanishing.
            "undated_rows": MetadataValue.json(
                {str(b): n for b, n in sorted(undated.items()) if n}
            ),
            "alert_threshold": MetadataValue.text(str(settings.alert_threshold)),
            **age,
            # Shards read without error that hold no row of any of their billers in the run's
            # whole window (a wrong ShardName or URL reads an empty database): a warning.
            **(
                {"empty_shards": MetadataValue.json(dict(sorted(empty_shards.items())))}
                if empty_shards
                else {}
            ),
        },
    )


def coverage_evaluation(
    coverage: Coverage,
    key: str,
    settings: CoverageSettings,
    undated: dict[int, int],
    oldest_missing: datetime | None = None,
    target=None,
    empty_shards: dict[str, list[int]] | None = None,
) -> AssetCheckEvaluation:
    """The coverage check's result for one hour partition, as an event of the hourly step, tied
    to the partition's materialization ``target``."""
    verdict = coverage_verdict(
        coverage, settings, undated, oldest_missing, empty_shards=empty_shards
    )
    return verdict.evaluation(COVERAGE_ASSET, COVERAGE_CHECK, key, target)


def finish(
    context: AssetExecutionContext,
    warehouse: WarehouseResource,
    outcome: Outcome,
    started: datetime,
    specs,
    level_sql: str,
    level: Level,
    start: date,
    windows: list[datetime],
    enabled: list[int],
    settings: CoverageSettings | None = None,
    extra_windows: list[datetime] = (),
):
    """Write the job log row, report coverage (hourly), then the run's result.

    Every partition of the run is recorded as materialized: it holds the rows of every biller
    that was written. When some billers were not written, the coverage check of each hour names
    them and the run is tagged with why (``metrics/failure``: shard busy / shard unreachable /
    error, and the billers); the ledger tells the retry sensor what to redo. A busy shard is
    routine: the run succeeds (its check WARNs). Any other failure (unreachable, misconfigured,
    an error) is a fault: the step fails naming the billers.
    ``extra_windows`` are windows outside the run's partition range that it recomputed (a
    refresh's late rows): they get their own materialization events and coverage results.
    """
    try:
        warehouse.write_job_log(
            run_id=context.run_id,
            started=started,
            ended=utc_second(),
            processed=outcome.billers_processed,
            skipped_busy=len(outcome.busy),
            failed=len(set(outcome.failed) - set(outcome.busy)),
            failed_shards=set(outcome.busy.values()) | set(outcome.unreachable.values()),
            summary=outcome.summary(),
        )
    except DatabaseUnreachable as exc:
        context.log.warning(f"job log not written: {exc}")
    last = partition_key(level, start, windows[-1])
    for window in extra_windows:
        for spec in specs:
            context.log_event(
                AssetMaterialization(
                    asset_key=spec.key,
                    partition=partition_key(level, start, window),
                    metadata={"recomputed_by": "refresh (late or changed rows)"},
                )
            )
    # Each partition's own figures: what this run wrote into it, and who is missing from it.
    requests: dict[datetime, int] = defaultdict(int)
    written: dict[datetime, int] = defaultdict(int)
    for (_, window), n in outcome.request_counts.items():
        requests[window] += n
        written[window] += 1
    missing: dict[datetime, int] = defaultdict(int)
    for _, window in outcome.uncovered:
        missing[window] += 1
    verdicts: dict[str, Coverage] = {}
    oldest = None
    if settings is not None:
        reported = sorted({*windows, *extra_windows})
        ledger = warehouse.read_ledger_hours(DATAPUMP, level, reported)
        expected = [str(b) for b in enabled]
        oldest = oldest_not_written(warehouse, enabled)
        for window in reported:
            coverage = judge(window, expected, ledger.get(window, {}))
            missing[window] = len(coverage.gaps)
            verdicts[partition_key(level, start, window)] = coverage
    for window in windows:
        key = partition_key(level, start, window)
        for spec in specs:
            context.add_asset_metadata(
                {
                    "requests": requests.get(window, 0),
                    "billers_written": written.get(window, 0),
                    "billers_not_written": missing.get(window, 0),
                },
                asset_key=spec.key,
                partition_key=key,
            )
    # The statements sent, once per run (on its last partition): not a figure of that hour.
    for spec in specs:
        context.add_asset_metadata(
            {"sql": MetadataValue.md(f"```sql\n{level_sql}\n```")},
            asset_key=spec.key,
            partition_key=last,
        )
    # The run's totals stay on the run: tags (Runs page) and its log, never on one partition.
    rows = outcome.written.get(AGGREGATES[0].table, {})
    totals = {
        "metrics/run_partitions": str(len(windows)),
        "metrics/run_biller_windows": str(len(outcome.request_counts)),
        "metrics/run_requests": str(sum(outcome.request_counts.values())),
        "metrics/run_rows": ", ".join(f"{k} {v}" for k, v in sorted(rows.items())),
    }
    context.instance.add_run_tags(context.run_id, totals)
    context.log.info(
        f"run totals: {totals['metrics/run_partitions']} partition(s), "
        f"{totals['metrics/run_biller_windows']} biller-{level.unit}s, "
        f"{totals['metrics/run_requests']} requests; rows per table: {totals['metrics/run_rows']}"
    )
    for spec in specs:
        yield MaterializeResult(asset_key=spec.key)
    # Each hour's coverage check after its materialization, tied to it: the check's Partitions
    # view in the UI then counts every materialized hour as passed or failed.
    targets = materialization_targets(context.instance, COVERAGE_ASSET, verdicts)
    for key, coverage in verdicts.items():
        context.log_event(
            coverage_evaluation(
                coverage,
                key,
                settings,
                outcome.undated,
                oldest,
                targets.get(key),
                outcome.empty_shards,
            )
        )
    if outcome.failed:
        context.instance.add_run_tags(context.run_id, outcome.failure_tags())
    findings = outcome.finding_tags()
    if findings:
        context.instance.add_run_tags(context.run_id, findings)
    for shard, billers in sorted(outcome.empty_shards.items()):
        context.log.warning(
            f"shard {shard}: no row of its billers ({', '.join(map(str, billers))}) in the "
            "run's window; check its ShardName and METRICS_SHARD_URL_TEMPLATE"
        )
    undated = {b: n for b, n in outcome.undated.items() if n}
    if undated:
        context.log.warning(
            "rows with a NULL or unreadable CreatedDate, counted in no hour: "
            + ", ".join(f"biller {b}: {n}" for b, n in sorted(undated.items()))
        )
    if outcome.busy:
        # Routine (seed 000): skipped, logged, carried forward by the retry sensor; the hour's
        # coverage check WARNs (ERROR above the alert threshold) and the run succeeds.
        context.log.warning(
            f"{len(outcome.busy)} biller(s) skipped, shard busy (Processing flag set): "
            + ", ".join(f"{b} ({shard})" for b, shard in sorted(outcome.busy.items()))
            + "; the retry sensor reads them again once the flag clears"
        )
    faults = {b: why for b, why in outcome.failed.items() if b not in outcome.busy}
    if faults:
        lines = "; ".join(f"biller {b}: {why}" for b, why in sorted(faults.items()))
        raise Failure(
            description=f"{len(faults)} biller(s) not aggregated: {lines}",
            metadata={
                "failed_billers": MetadataValue.json(sorted(outcome.failed)),
                "reasons": MetadataValue.json({str(b): why for b, why in outcome.failed.items()}),
                "busy_billers": MetadataValue.json(sorted(outcome.busy)),
                "unreachable_shards": MetadataValue.json(sorted(set(outcome.unreachable.values()))),
                "written_biller_windows": len(outcome.request_counts),
            },
        )
