"""Partitioned asset checks in runs over a range of partitions (backfills, the CLI's ranged runs).

Dagster records an ``AssetCheckResult`` of a run over several partitions without a partition, so
a check that judged the whole range at once would leave every partition's check status empty.
Every family's partitioned checks go through :func:`each_partition`: one evaluation per
partition of the run, then, for a range, the run's summary.
"""

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    TimeWindowPartitionsDefinition,
)

from metrics_pipeline.clock import as_naive_utc
from metrics_pipeline.dagster_internal import materialization_targets


@dataclass(frozen=True)
class Verdict:
    """A check's judgement of one partition."""

    passed: bool
    severity: AssetCheckSeverity = AssetCheckSeverity.WARN
    description: str | None = None
    metadata: Mapping = field(default_factory=dict)

    def evaluation(
        self, asset_key: AssetKey, check_name: str, partition: str, target=None
    ) -> AssetCheckEvaluation:
        """This verdict as the evaluation of one partition (logged or yielded by a step), tied to
        ``target`` (:func:`~metrics_pipeline.dagster_internal.materialization_targets`), the
        partition's materialization it judged, so the UI counts it as the partition's status."""
        return AssetCheckEvaluation(
            asset_key=asset_key,
            check_name=check_name,
            partition=partition,
            passed=self.passed,
            severity=self.severity,
            description=self.description,
            metadata=self.metadata,
            target_materialization_data=target,
        )

    def result(self) -> AssetCheckResult:
        return AssetCheckResult(
            passed=self.passed,
            severity=self.severity,
            description=self.description,
            metadata=self.metadata,
        )


def run_partition_keys(context: AssetCheckExecutionContext) -> list[str]:
    """The partition keys of the check's run: its range, or its one partition."""
    keys = list(context.partition_keys) if context.has_partition_key_range else []
    return keys or [context.partition_key]


def each_partition(
    context: AssetCheckExecutionContext,
    partitions_def: TimeWindowPartitionsDefinition,
    judge: Callable[[str, datetime, datetime], Verdict],
) -> Iterator[AssetCheckEvaluation | AssetCheckResult]:
    """``judge(key, start, end)`` (naive UTC) for every partition of the run, as one evaluation
    each; a run of one partition returns its verdict as the check's result, a range run ends
    with a summary result (passed when every partition passed, the worst severity)."""
    [spec] = context.check_specs
    keys = run_partition_keys(context)
    targets = (
        materialization_targets(context.instance, spec.asset_key, keys) if len(keys) > 1 else {}
    )
    verdicts = []
    for key in keys:
        window = partitions_def.time_window_for_partition_key(key)
        start, end = as_naive_utc(window.start), as_naive_utc(window.end)
        verdict = judge(key, start, end)
        verdicts.append(verdict)
        if len(keys) > 1:
            yield verdict.evaluation(spec.asset_key, spec.name, key, targets.get(key))
    if len(keys) == 1:
        yield verdicts[0].result()
        return
    failed = [k for k, v in zip(keys, verdicts, strict=True) if not v.passed]
    worst = (
        AssetCheckSeverity.ERROR
        if any(v.severity == AssetCheckSeverity.ERROR for v in verdicts if not v.passed)
        else AssetCheckSeverity.WARN
    )
    yield AssetCheckResult(
        passed=not failed,
        severity=worst,
        description=f"{len(keys) - len(failed)} of {len(keys)} partitions passed "
        f"({keys[0]} .. {keys[-1]}); each partition has its own evaluation",
        metadata={"partitions": len(keys), "failed_partitions": failed[:50]},
    )
