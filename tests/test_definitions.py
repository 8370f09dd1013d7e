"""The code location loads with no database reachable, and everything in it resolves."""

from datetime import date, datetime

import pytest
from dagster import AssetKey, DefaultScheduleStatus, DefaultSensorStatus

from metrics_pipeline.definitions import build_definitions, defs
from metrics_pipeline.partitions import (
    parse_partitions_start,
    partition_key,
    partitions_def,
    rollup_mapping,
    window_of,
)
from metrics_pipeline.semantics import DAILY, HOURLY, WEEKLY

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
    for sensor in ("refresh_chain_sensor", "shard_retry_sensor", "backlog_sensor"):
        assert loaded.resolve_sensor_def(sensor).default_status == DefaultSensorStatus.RUNNING


def test_alerts_sensor_runs_by_default_once_a_receiver_is_set():
    quiet = build_definitions({}).resolve_sensor_def("alerts_sensor")
    assert quiet.default_status == DefaultSensorStatus.STOPPED
    env = {"METRICS_ALERTMANAGER_URL": "http://am:9093", "METRICS_ALERTS_INTERVAL_S": "30"}
    loud = build_definitions(env).resolve_sensor_def("alerts_sensor")
    assert loud.default_status == DefaultSensorStatus.RUNNING
    assert loud.minimum_interval_seconds == 30


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


def _upstream(key, down, up):
    subset = down.subset_with_partition_keys([key])
    result = rollup_mapping().get_upstream_mapped_partitions_result_for_partitions(
        subset, down, up, current_time=datetime(2025, 6, 1)
    )
    return sorted(result.partitions_subset.get_partition_keys())


def test_partition_mappings_are_explicit_day_to_24_hours_week_to_7_days():
    start = parse_partitions_start(None)
    hourly, daily, weekly = (partitions_def(lv, start) for lv in (HOURLY, DAILY, WEEKLY))
    hours = _upstream("2025-03-02", daily, hourly)
    assert len(hours) == 24
    assert hours[0] == "2025-03-02-00:00" and hours[-1] == "2025-03-02-23:00"
    days = _upstream("2025-03-02", weekly, daily)
    assert days == [f"2025-03-{d:02d}" for d in range(2, 9)]
    graph = build_definitions({}).resolve_asset_graph()
    dep = graph.get(AssetKey("error_rate_daily"))
    assert dep.partitions_def == daily


def test_partition_counts_do_not_depend_on_the_billers(tmp_path):
    """Time partitions only: the count is the same with 1 biller and with 1,000."""
    from tests.support import register_billers

    counts = []
    for billers in (1, 1000):
        env = register_billers(tmp_path / str(billers), billers)
        defs_ = build_definitions({**env, "METRICS_PARTITIONS_START": "2026-01-04"})
        graph = defs_.resolve_asset_graph()
        counts.append(
            [
                graph.get(AssetKey(f"error_rate_{lv.name}")).partitions_def.get_num_partitions()
                for lv in (HOURLY, DAILY, WEEKLY)
            ]
        )
    assert counts[0] == counts[1]
    hours = int((datetime.utcnow() - datetime(2026, 1, 4)).total_seconds() // 3600) + 1
    assert abs(counts[0][0] - hours) <= 1  # the running hour is a partition (end_offset=1)


def test_partitions_start_is_configured_and_keys_go_through_dagster():
    # A Tuesday: every level begins on the Sunday before, so the first week can be whole.
    start = parse_partitions_start("2026-11-17")
    assert start == date(2026, 11, 15)
    assert parse_partitions_start("2026-11-15") == start  # a Sunday stays
    for level, first in (
        (HOURLY, "2026-11-15-00:00"),
        (DAILY, "2026-11-15"),
        (WEEKLY, "2026-11-15"),
    ):
        assert partitions_def(level, start).get_first_partition_key() == first
    key = partition_key(HOURLY, start, datetime(2026, 11, 18, 5))
    assert key == "2026-11-18-05:00"
    assert window_of(HOURLY, start, key) == (datetime(2026, 11, 18, 5), datetime(2026, 11, 18, 6))
    assert window_of(WEEKLY, start, "2026-11-22") == (
        datetime(2026, 11, 22),
        datetime(2026, 11, 29),
    )
    with pytest.raises(ValueError, match="METRICS_PARTITIONS_START"):
        parse_partitions_start("17/11/2026")


def test_column_lineage_runs_from_raw_shard_columns_to_every_level():
    graph = build_definitions({}).resolve_asset_graph()
    hourly = graph.get(AssetKey("error_rate_hourly")).metadata["dagster/column_lineage"]
    deps = hourly.deps_by_column["ErrorRate"]
    assert {(d.asset_key, d.column_name) for d in deps} == {
        (AssetKey(["shards", "DataPumpDetail"]), "StatusCode"),
        (AssetKey(["shards", "DataPumpDetail"]), "ResponseTime"),
    }
    p95 = graph.get(AssetKey("response_time_hourly")).metadata["dagster/column_lineage"]
    assert [d.column_name for d in p95.deps_by_column["P95ResponseTime"]] == ["ResponseTime"]
    weekly = graph.get(AssetKey("error_rate_weekly")).metadata["dagster/column_lineage"]
    [dep] = weekly.deps_by_column["FailedRequests"]
    assert dep.asset_key == AssetKey("error_rate_daily") and dep.column_name == "FailedRequests"
    # A rate rolled up is recomputed from the summed counts, not averaged.
    assert {d.column_name for d in weekly.deps_by_column["ErrorRate"]} == {
        "FailedRequests",
        "RequestCount",
    }


def test_every_aggregate_column_is_described_with_its_sources():
    """Open-source Dagster does not draw column lineage: each column's description says it."""
    graph = build_definitions({}).resolve_asset_graph()
    levels = {lv.name for lv in (HOURLY, DAILY, WEEKLY)}
    aggregates = [
        k
        for k in graph.get_all_asset_keys()
        if k.path[-1].split("_")[-1] in levels
        and k.path[-1].split("_")[0] in ("response", "error", "timeout")
    ]
    assert len(aggregates) == 9
    for key in aggregates:
        columns = graph.get(key).metadata["dagster/column_schema"].columns
        for column in columns:
            assert column.description and " ← " in column.description, (key, column.name)
    hourly = graph.get(AssetKey("error_rate_hourly")).metadata["dagster/column_schema"]
    rate = next(c for c in hourly.columns if c.name == "ErrorRate")
    assert rate.description.endswith("← DataPumpDetail.ResponseTime, StatusCode")
    daily = graph.get(AssetKey("timeout_rate_daily")).metadata["dagster/column_schema"]
    rate = next(c for c in daily.columns if c.name == "TimeoutRate")
    assert rate.description.endswith("← timeout_rate_hourly.RequestCount, TimeOutCount")


def test_every_availability_column_names_its_sources():
    graph = build_definitions({}).resolve_asset_graph()
    for name in ("availability_minute", "availability_daily", "availability_published"):
        columns = graph.get(AssetKey(name)).metadata["dagster/column_schema"].columns
        for column in columns:
            assert column.description and " ← " in column.description, (name, column.name)
    minute = graph.get(AssetKey("availability_minute")).metadata["dagster/column_schema"]
    latency = next(c for c in minute.columns if c.name == "TotalLatency")
    assert latency.description.endswith("← request_telemetry_events.Latency")
    daily = graph.get(AssetKey("availability_daily")).metadata["dagster/column_schema"]
    average = next(c for c in daily.columns if c.name == "AverageLatency")
    assert average.description.endswith("← availability_minute.TotalLatency, LatencyCount")


def test_docs_lineage_is_written_from_the_definitions():
    from pathlib import Path

    from metrics_pipeline.lineage_doc import render

    page = Path(__file__).resolve().parents[1] / "docs" / "lineage.md"
    assert page.read_text() == render(), (
        "docs/lineage.md is out of date: python -m metrics_pipeline.lineage_doc > docs/lineage.md"
    )
    assert "| `ErrorRate` | `shards/DataPumpDetail.ResponseTime`" in render()
    assert "| `TotalLatency` | `request_telemetry_events.Latency`" in render()


def test_collected_hourly_has_its_columns_and_the_raw_table_upstream():
    graph = build_definitions({}).resolve_asset_graph()
    node = graph.get(AssetKey("collected_metric_hourly"))
    assert AssetKey(["collected", "CollectedMetric"]) in node.parent_keys
    columns = node.metadata["dagster/column_schema"].columns
    assert {c.name for c in columns} >= {"MetricKey", "StartTime", "Median"}
    assert all(" ← CollectedMetric." in c.description for c in columns)
