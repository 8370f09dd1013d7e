"""The only place that touches Dagster's non-public API, each use wrapped and explained.

- Launching a real backfill (Backfills page) from a sensor: ``RunRequest.for_asset_graph_subset``
  takes an ``AssetGraphSubset``, which Dagster 1.13 keeps private. Replace with the public
  constructor when Dagster publishes one.
- Listing backfills in flight: ``BulkActionsFilter`` / ``BulkActionStatus`` are not exported from
  the top-level package; ``DagsterInstance.get_backfills`` itself is public.
- Tying a check evaluation to the materialization it judged: the UI counts a partition's check
  status only when the evaluation's ``target_materialization_data`` is that partition's latest
  materialization, and ``AssetCheckEvaluationTargetMaterializationData`` is not exported.
  Dagster fills it itself for a check yielded by its asset's own step for one partition; our
  steps cover ranges of partitions, so :func:`materialization_targets` does the same per
  partition.
- ``throwaway_instance()``: ``DagsterInstance.ephemeral()`` built from the same parts, except
  an event log that keeps every event but not the asset index (latest materialization per asset,
  asset event tags) — for ``materialize`` without DAGSTER_HOME, whose instance is dropped when
  the command ends. Dagster has no public switch for this; drop it if one appears.
- Reading each check partition's latest evaluation incrementally (the alerts sensor):
  ``get_asset_check_partition_info`` and ``get_asset_check_execution_history`` are public
  methods of the event log storage, but their ``PartitionKeyFilter`` and
  ``AssetCheckExecutionRecordStatus`` are not exported. Replace when Dagster exports them.
"""

from collections.abc import Iterable
from typing import Any

from dagster import AssetKey, DagsterInstance, RunRequest
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus


def materialization_targets(
    instance: DagsterInstance, asset_key: AssetKey, partition_keys: Iterable[str]
) -> dict[str, Any]:
    """{partition key: the target data of its latest materialization}, for the partitions that
    have one: what an ``AssetCheckEvaluation(target_materialization_data=...)`` takes."""
    from dagster import AssetRecordsFilter
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )

    keys = sorted(set(partition_keys))
    out: dict[str, Any] = {}
    for i in range(0, len(keys), 500):
        chunk = keys[i : i + 500]
        # Newest first: the first record of each partition is its latest materialization.
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=asset_key, asset_partitions=chunk), limit=len(chunk)
        ).records
        for record in records:
            partition = record.partition_key
            if partition is not None and partition not in out:
                out[partition] = AssetCheckEvaluationTargetMaterializationData(
                    storage_id=record.storage_id,
                    run_id=record.event_log_entry.run_id,
                    timestamp=record.timestamp,
                )
    return out


def backfill_request(
    asset_graph, partitions: Iterable[tuple[AssetKey, str]], tags: dict[str, str]
) -> RunRequest:
    """A RunRequest that the sensor daemon turns into one asset backfill of these partitions."""
    subset = AssetGraphSubset.from_asset_partition_set(
        {AssetKeyPartitionKey(key, partition) for key, partition in partitions}, asset_graph
    )
    return RunRequest.for_asset_graph_subset(subset, tags=tags)


def backfills_in_flight(instance: DagsterInstance, tags: dict[str, str]) -> list[str]:
    """Ids of requested (not yet finished) backfills carrying these tags."""
    backfills = instance.get_backfills(
        filters=BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED], tags=tags)
    )
    return [b.backfill_id for b in backfills]


def throwaway_instance() -> DagsterInstance:
    """An in-memory instance for runs nobody looks at afterwards.

    Identical to ``DagsterInstance.ephemeral()`` except that its event log skips the asset index
    updates Dagster makes for every materialization event (about 40 % of the fixed cost of a
    two-week ``materialize``: 1,760 partitions x 3 assets). The events themselves are stored,
    so run results, step failures and logs are unchanged.
    """
    from dagster._core.instance import InstanceType
    from dagster._core.launcher.sync_in_memory_run_launcher import SyncInMemoryRunLauncher
    from dagster._core.run_coordinator import DefaultRunCoordinator
    from dagster._core.storage.event_log import InMemoryEventLogStorage
    from dagster._core.storage.noop_compute_log_manager import NoOpComputeLogManager
    from dagster._core.storage.root import TemporaryLocalArtifactStorage
    from dagster._core.storage.runs import InMemoryRunStorage

    class UnindexedEventLogStorage(InMemoryEventLogStorage):
        def _store_asset_event_tags(self, *args: Any, **kwargs: Any) -> None:
            return None

        def _store_asset_event(self, *args: Any, **kwargs: Any) -> None:
            return None

    return DagsterInstance(
        instance_type=InstanceType.EPHEMERAL,
        local_artifact_storage=TemporaryLocalArtifactStorage(),
        run_storage=InMemoryRunStorage(),
        event_storage=UnindexedEventLogStorage(),
        compute_log_manager=NoOpComputeLogManager(),
        run_coordinator=DefaultRunCoordinator(),
        run_launcher=SyncInMemoryRunLauncher(),
    )


def changed_check_partitions(
    instance: DagsterInstance, check_keys: list, after: int | None
) -> list[tuple[Any, str | None, str, int]]:
    """(check key, partition, status, storage id) of every check partition whose latest event
    is newer than storage id ``after``; status is PLANNED, SUCCEEDED or FAILED."""
    if not check_keys:
        return []
    infos = instance.event_log_storage.get_asset_check_partition_info(
        list(check_keys), after_storage_id=after
    )
    return [
        (
            i.check_key,
            i.partition_key,
            i.latest_execution_status.value,
            i.latest_check_event_storage_id,
        )
        for i in infos
        if after is None or i.latest_check_event_storage_id > after
    ]


def latest_check_evaluation(instance: DagsterInstance, check_key, partition: str | None):
    """The latest completed ``AssetCheckEvaluation`` of one check partition, or None."""
    from dagster._core.event_api import PartitionKeyFilter
    from dagster._core.storage.asset_check_execution_record import (
        COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
    )

    records = instance.event_log_storage.get_asset_check_execution_history(
        check_key,
        limit=1,
        status=COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
        partition_filter=PartitionKeyFilter(key=partition),
    )
    if not records or records[0].event is None or records[0].event.dagster_event is None:
        return None
    return records[0].event.dagster_event.event_specific_data
