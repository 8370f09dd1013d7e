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
- ``LeanSqliteEventLogStorage``: Dagster's SQLite event log (one database per run plus an
  index), keeping an engine per database open instead of creating an engine, opening a
  connection and closing it (a WAL checkpoint) for every event. Storing an event costs 2-3 ms
  instead of about 10 ms: about 1,400 events of a two-week ``materialize``. The instances that
  ``metrics-pipeline`` creates in DAGSTER_HOME name it in their dagster.yaml; the files and
  their layout are Dagster's own, so the webserver, the daemon and Dagster's stock class read
  them as ever. It also stores a batch of one asset's materializations (a step over many
  partitions) in one transaction per database, as dagster-postgres does, where Dagster's SQLite
  class stores them one by one. Its connections commit without
  waiting for the disk (``PRAGMA synchronous=NORMAL``, SQLite's advice for its WAL mode, which
  Dagster's files use): a commit survives a crash of the process, not a power cut of the
  machine; a fsync per event was about a third of the event log's cost. Drop it if Dagster's
  own class stops reconnecting per event.
- ``remember_tables()``: Dagster's SQL event logs ask their database whether the asset check
  table exists before storing every check evaluation (``supports_asset_checks``: on SQLite
  through a new engine and connection, on PostgreSQL a catalog query): 336 times in a two-week
  ``materialize``. The storage object of the command's instance gets a ``has_table`` that
  remembers a table once it is there (tables are not dropped while a command runs).
- ``throwaway_instance()``: ``DagsterInstance.ephemeral()`` built from the same parts, except
  an event log that keeps every event but not the asset index (latest materialization per asset,
  asset event tags) — for ``materialize`` without DAGSTER_HOME, whose instance is dropped when
  the command ends. Dagster has no public switch for this; drop it if one appears.
- Reading each check partition's latest evaluation incrementally (the alerts sensor):
  ``get_asset_check_partition_info`` and ``get_asset_check_execution_history`` are public
  methods of the event log storage, but their ``PartitionKeyFilter`` and
  ``AssetCheckExecutionRecordStatus`` are not exported. Replace when Dagster exports them.
"""

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from dagster import AssetKey, DagsterEventType, DagsterInstance, RunRequest
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from sqlalchemy import event as sqlalchemy_event


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
        wanted = set(chunk)
        # Newest first: the first record of each partition is its latest materialization. A
        # partition materialized again since (the running hour, a re-run) has several records,
        # so one page of len(chunk) records may not reach the others': page on until every
        # partition of the chunk is found or none is left.
        cursor = None
        while wanted:
            page = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=asset_key, asset_partitions=chunk),
                limit=len(chunk),
                cursor=cursor,
            )
            for record in page.records:
                partition = record.partition_key
                if partition in wanted:
                    wanted.discard(partition)
                    out[partition] = AssetCheckEvaluationTargetMaterializationData(
                        storage_id=record.storage_id,
                        run_id=record.event_log_entry.run_id,
                        timestamp=record.timestamp,
                    )
            if not page.has_more:
                break
            cursor = page.cursor
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


def remember_tables(instance: DagsterInstance) -> None:
    """The instance's event log answers "is this table there?" from memory once it was (see
    the module's docstring)."""
    storage = instance.event_log_storage
    ask = getattr(storage, "has_table", None)
    if ask is None:
        return
    found: set[str] = set()

    def has_table(table_name: str) -> bool:
        if table_name not in found and ask(table_name):
            found.add(table_name)
        return table_name in found

    storage.has_table = has_table


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


def _commit_without_fsync(dbapi_connection, _record) -> None:
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


class LeanSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's run-sharded SQLite event log with its engines kept open (the most recently
    used ``KEEP_OPEN`` databases); see the module's docstring."""

    KEEP_OPEN = 8

    def __init__(self, base_dir: str, inst_data=None):
        # Set before Dagster's constructor, which may connect to the index already.
        self._engines: OrderedDict[str, Any] = OrderedDict()
        super().__init__(base_dir, inst_data)

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str):
        from sqlalchemy import create_engine
        from sqlalchemy.pool import StaticPool

        engine = self._engines.get(shard)
        if engine is not None:
            self._engines.move_to_end(shard)
            return engine
        # One connection per database, used under Dagster's own lock (one thread at a time).
        engine = create_engine(
            self.conn_string_for_shard(shard),
            poolclass=StaticPool,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
        )
        sqlalchemy_event.listen(engine, "connect", _commit_without_fsync)
        if shard not in self._initialized_dbs:
            self._initdb(engine)
            self._initialized_dbs.add(shard)
        self._engines[shard] = engine
        while len(self._engines) > self.KEEP_OPEN:
            self._engines.popitem(last=False)[1].dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Any]:
        with self._db_lock:
            with self._engine(shard).connect() as conn, conn.begin():
                yield conn

    def store_event_batch(self, events) -> None:
        """One step's materializations (or observations) of one asset in one transaction per
        database, not two per event: Dagster's SQLite class stores a batch one event at a time
        (dagster-postgres already batches). Any other batch goes Dagster's way."""
        kinds = {e.dagster_event_type for e in events}
        if (
            len(kinds) != 1
            or not kinds
            <= {DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_OBSERVATION}
            or len({e.run_id for e in events}) != 1
        ):
            super().store_event_batch(events)
            return
        rows = [self._event_to_row(e) for e in events]  # each event serialized once
        with self.run_connection(events[0].run_id) as conn:
            conn.execute(SqlEventLogStorageTable.insert(), rows)
        with self.index_transaction() as conn:
            ids = [
                conn.execute(SqlEventLogStorageTable.insert().values(**row)).inserted_primary_key[0]
                for row in rows
            ]
            self._store_asset_event_tags(conn, events, ids)
            # The asset's row keeps its latest event: the last of the batch for each asset.
            last = {e.dagster_event.asset_key: (e, i) for e, i in zip(events, ids, strict=True)}
            for event, event_id in last.values():
                self._store_asset_event(conn, event, event_id)

    def _close_all(self) -> None:
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()

    def wipe(self) -> None:
        self._close_all()  # never write on into a database file that was deleted
        super().wipe()

    def upgrade(self) -> None:
        self._close_all()
        super().upgrade()

    def dispose(self) -> None:
        self._close_all()
        super().dispose()


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
