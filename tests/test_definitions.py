"""The code location loads with no database reachable, and everything in it resolves."""

from datetime import datetime

from dagster import (
    AssetKey,
    DagsterInstance,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    MultiPartitionKey,
)

from metrics_pipeline.definitions import build_definitions, defs
from metrics_pipeline.partitions import (
    daily_from_hourly,
    daily_partitions,
    hourly_partitions,
    weekly_from_daily,
    weekly_partitions,
)

UNREACHABLE = {
    "METRICS_CATALOG_URL": "postgresql://nobody@127.0.0.1:1/catalog",
    "METRICS_WAREHOUSE_URL": "postgresql://nobody@127.0.0.1:1/warehouse",
    "METRICS_SHARD_URL_TEMPLATE": "mssql+pyodbc://u:p@127.0.0.1:1/{shard}?driver=FreeTDS",
}
AGGREGATES = [
    f"{m}_{lvl}"
    for m in ("response_time", "error_rate", "timeout_rate")
    for lvl in ("hourly", "daily", "weekly")
]


def test_definitions_load_without_databases(monkeypatch):
    for k, v in UNREACHABLE.items():
        monkeypatch.setenv(k, v)
    loaded = defs()
    graph = loaded.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert set(AGGREGATES) <= keys
    assert {
        "shards/DataPumpDetail",
        "shards/BillerDataPump",
        "catalog/BillerElasticOptions",
    } <= keys
    for name in ("hourly_job", "daily_job", "weekly_job"):
        assert loaded.resolve_job_def(name).name == name
    assert (
        loaded.resolve_schedule_def("refresh_schedule").default_status
        == DefaultScheduleStatus.RUNNING
    )
    for sensor in ("billers_sensor", "refresh_chain_sensor"):
        assert loaded.resolve_sensor_def(sensor).default_status == DefaultSensorStatus.RUNNING


def test_every_aggregate_asset_is_documented_for_analysts():
    graph = build_definitions({}).resolve_asset_graph()
    for name in AGGREGATES:
        node = graph.get(AssetKey(name))
        assert node.description and node.group_name.startswith("metrics_")
        assert node.owners == ["team:metrics-platform"]
        assert {"sql", "python"} <= set(node.kinds)
        schema = node.metadata["dagster/column_schema"]
        names = [c.name for c in schema.columns]
        assert {"BillerId", "TimeStampTypeId", "StartTime", "EndTime", "RequestCount"} <= set(names)
    hourly = graph.get(AssetKey("error_rate_hourly"))
    assert AssetKey(["shards", "DataPumpDetail"]) in hourly.parent_keys
    assert graph.get(AssetKey("error_rate_daily")).parent_keys == {AssetKey("error_rate_hourly")}
    assert graph.get(AssetKey("error_rate_weekly")).parent_keys == {AssetKey("error_rate_daily")}


def test_refresh_interval_is_configurable_and_validated():
    assert (
        build_definitions({"METRICS_REFRESH_MINUTES": "10"})
        .resolve_schedule_def("refresh_schedule")
        .cron_schedule
        == "*/10 * * * *"
    )
    try:
        build_definitions({"METRICS_REFRESH_MINUTES": "7"})
    except ValueError as exc:
        assert "METRICS_REFRESH_MINUTES" in str(exc)
    else:
        raise AssertionError("7 minutes does not divide an hour")


def _upstream(mapping, key, down, up, instance):
    subset = down.subset_with_partition_keys([key])
    result = mapping.get_upstream_mapped_partitions_result_for_partitions(
        subset, down, up, current_time=datetime(2025, 6, 1), dynamic_partitions_store=instance
    )
    return sorted(result.partitions_subset.get_partition_keys())


def test_partition_mappings_are_explicit_day_to_24_hours_week_to_7_days():
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("billers", ["7", "8"])
    day = MultiPartitionKey({"biller": "7", "time": "2025-03-02"})
    hours = _upstream(daily_from_hourly, day, daily_partitions, hourly_partitions, instance)
    assert len(hours) == 24
    assert hours[0] == "7|2025-03-02-00:00" and hours[-1] == "7|2025-03-02-23:00"
    week = MultiPartitionKey({"biller": "8", "time": "2025-03-02"})
    days = _upstream(weekly_from_daily, week, weekly_partitions, daily_partitions, instance)
    assert days == [f"8|2025-03-{d:02d}" for d in range(2, 9)]
