"""The event log of the instances metrics-pipeline creates: Dagster's own SQLite files, read back
by Dagster's stock class, written from several threads, and safe across a wipe."""

import threading

import pytest
from dagster import AssetKey, AssetMaterialization, DagsterEventType, EventRecordsFilter
from dagster._core.events import DagsterEvent, StepMaterializationData
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster_postgres.event_log import PostgresEventLogStorage

from metrics_pipeline.dagster_internal import LeanSqliteEventLogStorage
from metrics_pipeline.execution import ensure_dagster_home, open_instance


def materialization(run_id: str, i: int, asset: str = "a") -> EventLogEntry:
    return EventLogEntry(
        error_info=None,
        level=20,
        user_message="",
        run_id=run_id,
        timestamp=1_700_000_000.0 + i,
        dagster_event=DagsterEvent(
            DagsterEventType.ASSET_MATERIALIZATION.value,
            "job",
            event_specific_data=StepMaterializationData(
                AssetMaterialization(AssetKey(asset), partition=f"p{i}", tags={"dagster/x": str(i)})
            ),
        ),
    )


def test_events_from_many_threads_and_runs_are_read_back_by_dagsters_own_class(tmp_path):
    lean = LeanSqliteEventLogStorage(str(tmp_path))
    lean.KEEP_OPEN = 2  # more runs than open databases: evicted engines reopen
    runs = [f"run{i}" for i in range(4)]
    errors: list[BaseException] = []

    def write(run_id):
        try:
            for i in range(50):
                lean.store_event(materialization(run_id, i))
        except BaseException as exc:  # a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    stock = SqliteEventLogStorage(str(tmp_path))
    for run_id in runs:
        assert len(stock.get_logs_for_run(run_id)) == 50
        assert len(lean.get_logs_for_run(run_id)) == 50
    # The asset index (cross-run) holds every partition's materialization.
    assert len(stock.get_materialized_partitions(AssetKey("a"))) == 50

    lean.wipe()
    assert lean.get_logs_for_run("run0") == []
    lean.store_event(materialization("run0", 1))  # into a new file, not the deleted one
    assert len(SqliteEventLogStorage(str(tmp_path)).get_logs_for_run("run0")) == 1
    lean.dispose()


def test_a_new_dagster_home_uses_it_in_dagsters_usual_place(tmp_path):
    home = tmp_path / "home"
    ensure_dagster_home(str(home))
    instance = open_instance({"DAGSTER_HOME": str(home)})
    assert isinstance(instance.event_log_storage, LeanSqliteEventLogStorage)
    instance.event_log_storage.store_event(materialization("r", 0))
    assert (home / "history" / "runs" / "r.db").exists()
    # Dagster's stock class reads the same files where it keeps them by default.
    stock = SqliteEventLogStorage(str(home / "history" / "runs"))
    assert len(stock.get_logs_for_run("r")) == 1


def test_a_batch_reads_back_as_the_same_events_stored_one_by_one(tmp_path):
    lean = LeanSqliteEventLogStorage(str(tmp_path / "lean"))
    stock = SqliteEventLogStorage(str(tmp_path / "stock"))
    for storage in (lean, stock):
        storage.store_event_batch([materialization("r", i) for i in range(30)])
        storage.store_event_batch([materialization("r", i, "b") for i in range(30, 35)])
    # Read back by Dagster's own class from the lean files, as the webserver would.
    reread = SqliteEventLogStorage(str(tmp_path / "lean"))
    for storage in (reread, stock):
        assert [e.timestamp for e in storage.get_logs_for_run("r")] == [
            1_700_000_000.0 + i for i in range(35)
        ]
        assert storage.get_materialized_partitions(AssetKey("a")) == {f"p{i}" for i in range(30)}
        [a] = storage.get_latest_materialization_events([AssetKey("a")]).values()
        assert a.asset_materialization.partition == "p29"  # the asset's latest: the batch's last
        [b] = storage.get_latest_materialization_events([AssetKey("b")]).values()
        assert b.asset_materialization.partition == "p34"
        records = storage.get_event_records(
            EventRecordsFilter(DagsterEventType.ASSET_MATERIALIZATION, asset_key=AssetKey("a"))
        )
        assert len(records) == 30
    lean.dispose()


def test_its_commits_do_not_wait_for_the_disk_in_dagsters_wal_mode(tmp_path):
    """WAL with synchronous=NORMAL: a commit survives the process, not a power cut; the fsync
    per event it saves was a third of the event log's cost."""
    lean = LeanSqliteEventLogStorage(str(tmp_path))
    lean.store_event(materialization("run0", 0))
    for connection in (lean.run_connection("run0"), lean.index_connection()):
        with connection as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    lean.dispose()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_the_commands_instance_asks_for_the_check_table_once(
    backend, tmp_path, request, monkeypatch
):
    home = tmp_path / "home"
    if backend == "postgres":
        url = request.getfixturevalue("pg_databases").create()
        home.mkdir()
        (home / "dagster.yaml").write_text(
            "storage:\n  postgres:\n    postgres_url: "
            + url.replace("postgresql+psycopg://", "postgresql+psycopg2://", 1)
            + "\ntelemetry:\n  enabled: false\n"
        )
    asked = []
    for storage_class in (LeanSqliteEventLogStorage, PostgresEventLogStorage):
        ask = storage_class.has_table

        def counted(self, name, ask=ask):
            asked.append(name)
            return ask(self, name)

        monkeypatch.setattr(storage_class, "has_table", counted)
    instance = open_instance({"DAGSTER_HOME": str(home)})
    storage = instance.event_log_storage
    asked.clear()
    assert all(storage.supports_asset_checks for _ in range(5))
    assert asked.count("asset_check_executions") <= 1
    # A table that is not there is asked for again each time.
    assert not storage.has_table("no_such_table") and not storage.has_table("no_such_table")
    assert asked.count("no_such_table") == 2
    # Dagster's own way: a question per check evaluation.
    del storage.has_table
    asked.clear()
    assert all(storage.supports_asset_checks for _ in range(5))
    assert asked == ["asset_check_executions"] * 5
    instance.dispose()
