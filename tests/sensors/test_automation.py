"""Biller discovery, the refresh schedule and the refresh chain against a real Dagster instance."""

from datetime import UTC, datetime, timedelta

import pytest
from dagster import (
    DagsterInstance,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)
from sqlalchemy import create_engine, text

from metrics_pipeline.definitions import build_definitions
from metrics_pipeline.refresh import RANGE_END, RANGE_START, REFRESH_TAG, refresh_hours
from metrics_pipeline.resources.databases import CatalogResource
from metrics_pipeline.sensors.billers import billers_sensor, partition_changes
from metrics_pipeline.sensors.refresh_chain import refresh_chain_sensor
from tests.support import WINDOW_START, sqlite_environment


@pytest.fixture
def env(tmp_path):
    return sqlite_environment(tmp_path, per_hour=3)


@pytest.fixture
def instance():
    with instance_for_test() as inst:
        yield inst


def apply(instance: DagsterInstance, result) -> None:
    for request in result.dynamic_partitions_requests:
        if type(request).__name__ == "AddDynamicPartitionsRequest":
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


def test_partition_changes():
    assert partition_changes(["7", "8"], [9, 7]) == (["9"], ["8"])
    assert partition_changes([], [3, 1, 2]) == (["1", "2", "3"], [])


def test_billers_sensor_follows_the_catalog(env, instance):
    catalog = CatalogResource(url=env["METRICS_CATALOG_URL"])
    with build_sensor_context(instance=instance, resources={"catalog": catalog}) as ctx:
        apply(instance, billers_sensor(ctx))
        assert instance.get_dynamic_partitions("billers") == ["7", "8", "9"]
        assert isinstance(billers_sensor(ctx), SkipReason)  # nothing changed

    engine = create_engine(env["METRICS_CATALOG_URL"])
    with engine.begin() as conn:
        conn.execute(
            text(
                'UPDATE "BillerElasticOptions" SET "IsDataPumpEnabled" = '
                'CASE "BillerId" WHEN 8 THEN 0 WHEN 10 THEN 1 ELSE "IsDataPumpEnabled" END'
            )
        )
    engine.dispose()
    with build_sensor_context(instance=instance, resources={"catalog": catalog}) as ctx:
        apply(instance, billers_sensor(ctx))
    assert sorted(instance.get_dynamic_partitions("billers"), key=int) == ["7", "9", "10"]


def test_billers_sensor_fails_the_tick_when_the_catalog_is_unreachable(instance, tmp_path):
    catalog = CatalogResource(url=f"sqlite:///{tmp_path}/missing.db")
    with build_sensor_context(instance=instance, resources={"catalog": catalog}) as ctx:
        with pytest.raises(Exception, match="catalog unreachable"):
            billers_sensor(ctx)


@pytest.mark.parametrize(
    "tick, every, expected",
    [
        (datetime(2025, 3, 1, 10, 0), 30, [9, 10]),
        (datetime(2025, 3, 1, 10, 30), 30, [9, 10]),
        (datetime(2025, 3, 1, 11, 0, 5), 30, [10, 11]),
        (datetime(2025, 3, 1, 10, 45), 15, [10]),
        (datetime(2025, 3, 1, 10, 10), 5, [10]),
    ],
)
def test_refresh_hours_finalize_the_closed_hour_once_it_settled(tick, every, expected):
    assert [h.hour for h in refresh_hours(tick, every)] == expected


@pytest.mark.parametrize("n_billers", [3, 200])
def test_refresh_schedule_is_one_run_whatever_the_number_of_billers(instance, n_billers):
    schedule = build_definitions({}).resolve_schedule_def("refresh_schedule")
    tick = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
    ctx = build_schedule_context(instance=instance, scheduled_execution_time=tick)
    assert isinstance(schedule.evaluate_tick(ctx).skip_message, str)  # no billers yet
    instance.add_dynamic_partitions("billers", [str(i) for i in range(1, n_billers + 1)])
    requests = schedule.evaluate_tick(ctx).run_requests
    assert len(requests) == 1
    tags = requests[0].tags
    assert tags[RANGE_START] == "1|2025-03-01-09:00"
    assert tags[RANGE_END] == f"{n_billers}|2025-03-01-10:00"


def test_refresh_chain_runs_daily_then_weekly_after_hourly(env, instance):
    defs = build_definitions(env, resolve=True)
    instance.add_dynamic_partitions("billers", ["7", "8", "9"])
    hour = WINDOW_START + timedelta(hours=11)
    tags = {
        RANGE_START: f"7|{hour:%Y-%m-%d-%H:%M}",
        RANGE_END: f"9|{hour:%Y-%m-%d-%H:%M}",
        REFRESH_TAG: "t1",
        "metrics/level": "hourly",
    }
    assert (
        defs.resolve_job_def("hourly_job").execute_in_process(instance=instance, tags=tags).success
    )
    ctx = build_sensor_context(instance=instance)
    result = refresh_chain_sensor(ctx)
    [daily] = result.run_requests
    assert daily.job_name == "daily_job"
    assert daily.tags[RANGE_START] == "7|2025-03-01" and daily.tags[RANGE_END] == "9|2025-03-01"
    assert (
        defs.resolve_job_def("daily_job")
        .execute_in_process(instance=instance, tags=daily.tags)
        .success
    )
    ctx = build_sensor_context(instance=instance, cursor=result.cursor)
    result = refresh_chain_sensor(ctx)
    [weekly] = result.run_requests
    assert weekly.job_name == "weekly_job"
    assert weekly.tags[RANGE_START] == "7|2025-02-23"  # the Sunday starting that week
    assert (
        defs.resolve_job_def("weekly_job")
        .execute_in_process(instance=instance, tags=weekly.tags)
        .success
    )
    again = refresh_chain_sensor(build_sensor_context(instance=instance, cursor=result.cursor))
    assert [r.job_name for r in again.run_requests] == []
    engine = create_engine(env["METRICS_WAREHOUSE_URL"])
    with engine.connect() as conn:
        levels = dict(
            conn.execute(
                text(
                    'SELECT "TimeStampTypeId", COUNT(*) FROM "DataPumpErrorAggregation" GROUP BY 1'
                )
            ).all()
        )
    engine.dispose()
    assert levels == {1: 3, 2: 3, 3: 3}
