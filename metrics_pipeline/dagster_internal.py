"""The only place that touches Dagster's non-public API, each use wrapped and explained.

- Launching a real backfill (Backfills page) from a sensor: ``RunRequest.for_asset_graph_subset``
  takes an ``AssetGraphSubset``, which Dagster 1.13 keeps private. Replace with the public
  constructor when Dagster publishes one.
- Listing backfills in flight: ``BulkActionsFilter`` / ``BulkActionStatus`` are not exported from
  the top-level package; ``DagsterInstance.get_backfills`` itself is public.
"""

from collections.abc import Iterable

from dagster import AssetKey, DagsterInstance, RunRequest
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus


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
