"""The hourly statistics asset as Definitions holds it: partitions, the change-driven refresh
(CLI function and sensor) on real SQLite and PostgreSQL warehouses."""

from datetime import datetime, timedelta

import pytest
from dagster import (
    DagsterInstance,
    DefaultSensorStatus,
    HourlyPartitionsDefinition,
    build_sensor_context,
)

from metrics_pipeline.clock import utc_now
from metrics_pipeline.collected.assets import collected_partitions
from metrics_pipeline.collected.rules import hour_start, hour_stats
from metrics_pipeline.collected.runs import materialize_collected, refresh_collected
from metrics_pipeline.collected.store import CollectedStore
from metrics_pipeline.definitions import build_definitions
from metrics_pipeline.resources.engines import create_db_engine
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.tags import RANGE_END, RANGE_START

from .test_sql import rows


def test_definitions_hold_the_asset_job_and_sensor():
    defs = build_definitions({"METRICS_PARTITIONS_START": "2025-06-01"})
    graph = defs.resolve_asset_graph()
    node = graph.get(
        next(k for k in graph.get_all_asset_keys() if k.path == ["collected_metric_hourly"])
    )
    assert node.group_name == "collected" and "CollectedMetricHourly" in node.description
    partitions = node.partitions_def
    assert isinstance(partitions, HourlyPartitionsDefinition)
    assert partitions.get_first_partition_key() == "2025-06-01-00:00"
    assert defs.resolve_job_def("collected_hourly_job").partitions_def == partitions
    sensor = defs.resolve_sensor_def("collected_refresh_sensor")
    assert sensor.default_status == DefaultSensorStatus.RUNNING


def test_partitions_default_start_and_running_hour():
    p = collected_partitions({})
    assert p.get_first_partition_key() == "2025-01-05-00:00"
    # end_offset=1: the running hour is a partition, so it refreshes as it fills.
    assert p.get_last_partition_key() == hour_start(utc_now()).strftime("%Y-%m-%d-%H:%M")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse_env(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    else:
        url = request.getfixturevalue("pg_databases").create("mp_collected")
    return {"METRICS_WAREHOUSE_URL": url, "METRICS_DATA_DIR": str(tmp_path)}


def stats_of(store, key, start):
    return store.hour_stats(key, start)


def test_refresh_aggregates_changed_hours_and_late_points(warehouse_env):
    url = warehouse_env["METRICS_WAREHOUSE_URL"]
    store = CollectedStore(create_db_engine(url, "warehouse", must_exist=False))
    store.ensure_schema()
    now = hour_start(utc_now())
    closed = now - timedelta(hours=3)
    instance = DagsterInstance.ephemeral()
    assert refresh_collected(warehouse_env, instance).hours == 0
    store.insert_points(
        rows([("a/1", "rt", 1.0, closed), ("a/2", "rt", 4.0, closed), ("a/3", "rt", 9.0, now)])
    )
    run = refresh_collected(warehouse_env, instance)
    assert run.success and (run.first, run.last, run.hours) == (closed, now, 4)
    assert stats_of(store, "rt", closed) == hour_stats([1.0, 4.0])
    assert stats_of(store, "rt", now) == hour_stats([9.0])
    # A point arriving late for the closed hour re-aggregates that hour at the next refresh.
    store.insert_points(rows([("a/4", "rt", 2.0, closed + timedelta(minutes=30))]))
    run = refresh_collected(warehouse_env, instance)
    assert run.success and run.first == closed
    assert stats_of(store, "rt", closed) == hour_stats([1.0, 4.0, 2.0])
    # Nothing new: the overlap is read once more, then nothing is left to do.
    refresh_collected(warehouse_env, instance)
    assert refresh_collected(warehouse_env, instance).hours == 0
    # materialize rebuilds a window without touching the cursor.
    with store.engine.begin() as conn:
        conn.execute(store.t.hourly.delete())
    done = materialize_collected(closed, now + timedelta(hours=1), warehouse_env, instance)
    assert done.success and done.hours == 4
    assert stats_of(store, "rt", closed).count == 3
    # Each hour partition carries its own rows, not the run's totals.
    from dagster import AssetKey

    records = instance.fetch_materializations(AssetKey("collected_metric_hourly"), limit=4).records
    written = {
        r.partition_key: r.asset_materialization.metadata["rows_written"].value for r in records
    }
    assert written == {
        f"{closed + timedelta(hours=i):%Y-%m-%d-%H:%M}": n for i, n in enumerate((1, 0, 0, 1))
    }
    assert all("hours" not in r.asset_materialization.metadata for r in records)
    assert refresh_collected(warehouse_env, instance).hours == 0
    store.engine.dispose()


def test_materialize_rejects_an_empty_window(warehouse_env):
    start = datetime(2025, 3, 1, 5)
    with pytest.raises(ValueError, match="empty window"):
        materialize_collected(start, start, warehouse_env)
    with pytest.raises(ValueError, match="before the first partition"):
        materialize_collected(datetime(2024, 1, 1), start, warehouse_env)


def test_the_sensor_requests_one_run_over_the_changed_range(tmp_path):
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    env = {"METRICS_WAREHOUSE_URL": url, "METRICS_DATA_DIR": str(tmp_path)}
    defs = build_definitions(env, resolve=True)
    sensor = defs.resolve_sensor_def("collected_refresh_sensor")
    warehouse = WarehouseResource(url=url)
    store = CollectedStore(create_db_engine(url, "warehouse", must_exist=False))
    store.ensure_schema()
    with DagsterInstance.ephemeral() as instance:
        with build_sensor_context(instance=instance, resources={"warehouse": warehouse}) as ctx:
            assert "no new collected rows" in sensor(ctx).skip_message
        h = datetime(2025, 3, 1, 10)
        store.insert_points(rows([("a/1", "k", 1.0, h), ("a/2", "k", 2.0, h + timedelta(hours=5))]))
        with build_sensor_context(instance=instance, resources={"warehouse": warehouse}) as ctx:
            request = sensor(ctx)
        assert request.job_name == "collected_hourly_job"
        assert request.tags[RANGE_START] == "2025-03-01-10:00"
        assert request.tags[RANGE_END] == "2025-03-01-15:00"
        assert request.run_key == "collected-0-2"
        result = defs.resolve_job_def("collected_hourly_job").execute_in_process(
            instance=instance, tags=request.tags
        )
        assert result.success
        assert store.hour_stats("k", h).count == 1
        assert store.plan_refresh().previous == 0 and store.plan_refresh().current == 2
    store.engine.dispose()


def test_the_command_line_materializes_and_refreshes_the_family(warehouse_env, capsys):
    from metrics_pipeline.cli import main

    url = warehouse_env["METRICS_WAREHOUSE_URL"]
    store = CollectedStore(create_db_engine(url, "warehouse", must_exist=False))
    store.ensure_schema()
    h = datetime(2025, 3, 1, 10)
    store.insert_points(
        rows([("c/1", "cpu", 3.0, h), ("c/2", "cpu", 5.0, h + timedelta(minutes=9))])
    )
    window = ["--start", "2025-03-01T10:00Z", "--end", "2025-03-01T12:00Z"]
    assert main(["materialize", "--family", "collected", *window], environ=warehouse_env) == 0
    assert (
        "collected: 2 hour(s) 2025-03-01 10:00 .. 2025-03-01 11:00 UTC written"
        in capsys.readouterr().out
    )
    assert stats_of(store, "cpu", h) == hour_stats([3.0, 5.0])
    assert main(["refresh", "--family", "collected"], environ=warehouse_env) == 0
    assert (
        main(
            [
                "materialize",
                "--family",
                "collected",
                "--start",
                "2024-01-01",
                "--end",
                "2024-01-02",
            ],
            environ=warehouse_env,
        )
        == 2
    )
    assert "before the first partition" in capsys.readouterr().err
    store.engine.dispose()
