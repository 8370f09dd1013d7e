"""The refresh schedule and the refresh chain against a real Dagster instance."""

from datetime import UTC, datetime, timedelta

import pytest
from dagster import build_schedule_context, build_sensor_context, instance_for_test
from sqlalchemy import create_engine, text

from metrics_pipeline.datapump.refresh import refresh_hours
from metrics_pipeline.definitions import build_definitions
from metrics_pipeline.tags import RANGE_END, RANGE_START, REFRESH_TAG
from tests.support import WINDOW_START, register_billers, sqlite_environment


@pytest.fixture
def env(tmp_path):
    return sqlite_environment(tmp_path, per_hour=3)


@pytest.fixture
def instance():
    with instance_for_test() as inst:
        yield inst


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
def test_refresh_schedule_is_one_run_whatever_the_number_of_billers(instance, n_billers, tmp_path):
    env = register_billers(tmp_path, n_billers)
    schedule = build_definitions(env).resolve_schedule_def("refresh_schedule")
    tick = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
    ctx = build_schedule_context(instance=instance, scheduled_execution_time=tick)
    requests = schedule.evaluate_tick(ctx).run_requests
    assert len(requests) == 1
    tags = requests[0].tags
    # A range of hour partitions; the billers are rows inside them, not in the request.
    assert tags[RANGE_START] == "2025-03-01-09:00"
    assert tags[RANGE_END] == "2025-03-01-10:00"
    assert "metrics/billers" not in tags


def refresh_chain_sensor(env):
    return build_definitions(env, resolve=True).resolve_sensor_def("refresh_chain_sensor")


def test_refresh_chain_runs_daily_then_weekly_after_hourly(env, instance):
    defs = build_definitions(env, resolve=True)
    hour = WINDOW_START + timedelta(hours=11)
    tags = {
        RANGE_START: f"{hour:%Y-%m-%d-%H:%M}",
        RANGE_END: f"{hour:%Y-%m-%d-%H:%M}",
        REFRESH_TAG: "t1",
        "metrics/level": "hourly",
    }
    chain = refresh_chain_sensor(env)
    first = chain(build_sensor_context(instance=instance))
    assert not first.run_requests  # the first tick only starts the cursor: no history chained
    assert (
        defs.resolve_job_def("hourly_job").execute_in_process(instance=instance, tags=tags).success
    )
    cli = {**tags, REFRESH_TAG: "cli-1", "metrics/source": "cli"}
    assert (
        defs.resolve_job_def("hourly_job").execute_in_process(instance=instance, tags=cli).success
    )
    result = chain(build_sensor_context(instance=instance, cursor=first.cursor))
    [daily] = result.run_requests  # not the command's run: it chains its own levels
    assert daily.job_name == "daily_job"
    assert daily.tags[RANGE_START] == "2025-03-01" and daily.tags[RANGE_END] == "2025-03-01"
    assert (
        defs.resolve_job_def("daily_job")
        .execute_in_process(instance=instance, tags=daily.tags)
        .success
    )
    result = chain(build_sensor_context(instance=instance, cursor=result.cursor))
    [weekly] = result.run_requests
    assert weekly.job_name == "weekly_job"
    assert weekly.tags[RANGE_START] == "2025-02-23"  # the Sunday starting that week
    assert (
        defs.resolve_job_def("weekly_job")
        .execute_in_process(instance=instance, tags=weekly.tags)
        .success
    )
    again = chain(build_sensor_context(instance=instance, cursor=result.cursor))
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


def test_refresh_chain_keeps_a_retry_to_its_billers(env, instance):
    defs = build_definitions(env, resolve=True)
    hour = WINDOW_START + timedelta(hours=11)
    key = f"{hour:%Y-%m-%d-%H:%M}"
    tags = {
        RANGE_START: key,
        RANGE_END: key,
        REFRESH_TAG: "r1",
        "metrics/level": "hourly",
        "metrics/billers": "8",
    }
    chain = refresh_chain_sensor(env)
    first = chain(build_sensor_context(instance=instance))
    assert (
        defs.resolve_job_def("hourly_job").execute_in_process(instance=instance, tags=tags).success
    )
    [daily] = chain(build_sensor_context(instance=instance, cursor=first.cursor)).run_requests
    assert daily.tags["metrics/billers"] == "8"
