"""How an aggregation run ends: the job log row, run tags, materializations or a clear failure."""

from contextlib import contextmanager
from datetime import datetime

from dagster import (
    AssetExecutionContext,
    AssetMaterialization,
    Failure,
    MaterializeResult,
    MetadataValue,
)

from metrics_pipeline.aggregation import Outcome
from metrics_pipeline.partitions import partition_key
from metrics_pipeline.resources.engines import ConfigurationError, DatabaseUnreachable
from metrics_pipeline.resources.warehouse import WarehouseResource, utcnow
from metrics_pipeline.sql.warehouse import AGGREGATES


@contextmanager
def plain_failures():
    """An unreachable database or a bad setting fails the step with one readable line (and the
    transaction in flight rolls back), instead of a wrapped driver traceback."""
    try:
        yield
    except (DatabaseUnreachable, ConfigurationError) as exc:
        raise Failure(description=str(exc), metadata={"error": type(exc).__name__}) from exc


def finish(
    context: AssetExecutionContext,
    warehouse: WarehouseResource,
    outcome: Outcome,
    started: datetime,
    specs,
    level_sql: str,
    hourly: bool,
) -> list[MaterializeResult]:
    """Write the job log row, then report the run's result.

    When some billers failed, the partitions that were written are recorded as materialized, the
    run is tagged with why (``metrics/failure``: shard busy / shard unreachable / error, and the
    billers), and the step fails naming them, so the UI shows exactly which partitions are
    missing and why, and the retry sensor knows what to request again.
    """
    try:
        warehouse.write_job_log(
            run_id=context.run_id,
            started=started,
            ended=utcnow(),
            processed=outcome.billers_processed,
            skipped_busy=len(outcome.busy),
            failed=len(set(outcome.failed) - set(outcome.busy)),
            failed_shards=set(outcome.busy.values()) | set(outcome.unreachable.values()),
            summary=outcome.summary(),
        )
    except DatabaseUnreachable as exc:
        context.log.warning(f"job log not written: {exc}")
    if outcome.failed:
        # Record the partitions that were written, so only the failed billers' show as failed.
        for spec in specs:
            for b, s in outcome.request_counts:
                context.log_event(
                    AssetMaterialization(
                        asset_key=spec.key,
                        partition=partition_key(b, s, hourly),
                        metadata={"dagster/row_count": 1},
                    )
                )
    if outcome.failed:
        context.instance.add_run_tags(context.run_id, outcome.failure_tags())
        lines = "; ".join(f"biller {b}: {why}" for b, why in sorted(outcome.failed.items()))
        raise Failure(
            description=f"{len(outcome.failed)} biller(s) not aggregated: {lines}",
            metadata={
                "failed_billers": MetadataValue.json(sorted(outcome.failed)),
                "reasons": MetadataValue.json({str(b): why for b, why in outcome.failed.items()}),
                "busy_billers": MetadataValue.json(sorted(outcome.busy)),
                "unreachable_shards": MetadataValue.json(sorted(set(outcome.unreachable.values()))),
                "written_partitions": len(outcome.request_counts),
            },
        )
    # What the run did and the statements it sent go on the run's last partition of each asset:
    # metadata of the result itself is copied into every partition's event (thousands per
    # backfill), which costs more than the aggregation at a few thousand calls an hour.
    last = partition_key(*max(outcome.request_counts), hourly)
    results = []
    for agg, spec in zip(AGGREGATES, specs, strict=True):
        counts = outcome.written.get(agg.table, {})
        context.add_asset_metadata(
            {
                "run_partitions": len(outcome.request_counts),
                "run_requests": sum(outcome.request_counts.values()),
                "run_rows_inserted": counts.get("inserted", 0),
                "run_rows_updated": counts.get("updated", 0),
                "run_rows_unchanged": counts.get("unchanged", 0),
                "sql": MetadataValue.md(f"```sql\n{level_sql}\n```"),
            },
            asset_key=spec.key,
            partition_key=last,
        )
        # Every partition of the run is one row of the table.
        results.append(MaterializeResult(asset_key=spec.key, metadata={"dagster/row_count": 1}))
    return results
