"""Warehouse writes: schema upkeep, uniqueness, atomic and idempotent per partition."""

from datetime import datetime, timedelta

import pytest
from dagster import DagsterInstance, materialize
from sqlalchemy import create_engine, insert, inspect, text
from sqlalchemy.exc import IntegrityError

from metrics_pipeline.datapump.assets.hourly import build_hourly_aggregates
from metrics_pipeline.datapump.shards import CatalogResource, ShardsResource
from metrics_pipeline.datapump.sql import ShardNames, detail_table
from metrics_pipeline.partitions import parse_partitions_start
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import HOURLY, partial_from_rows
from tests.support import WINDOW_START, create_sources

HOUR = WINDOW_START + timedelta(hours=11)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/wh.db"
    return request.getfixturevalue("pg_databases").create()


def test_schema_is_created_upgraded_and_idempotent(warehouse_url):
    engine = create_engine(warehouse_url)
    with engine.begin() as conn:  # a table as an older version left it: no percentile columns
        conn.execute(
            text(
                'CREATE TABLE "DataPumpResponseTimeAggregation" ('
                '"DataPumpResponseTimeAggregationId" INTEGER PRIMARY KEY, "BillerId" INTEGER NOT NULL, '
                '"TimeStampTypeId" INTEGER NOT NULL, "StartTime" TIMESTAMP NOT NULL, '
                '"EndTime" TIMESTAMP NOT NULL, "RequestCount" BIGINT, "TotalResponseTime" NUMERIC(20,2), '
                '"AvgResponseTime" NUMERIC(12,2), "CreatedDate" TIMESTAMP NOT NULL, '
                '"UpdatedDate" TIMESTAMP NOT NULL)'
            )
        )
        conn.execute(
            text(
                'INSERT INTO "DataPumpResponseTimeAggregation" VALUES '
                "(1, 5, 1, '2025-01-01 00:00:00', '2025-01-01 01:00:00', 10, 1000, 100, "
                "'2025-01-01 01:00:00', '2025-01-01 01:00:00')"
            )
        )
    for _ in range(2):
        WarehouseResource(url=warehouse_url).ensure_schema()
    insp = inspect(engine)
    columns = {c["name"] for c in insp.get_columns("DataPumpResponseTimeAggregation")}
    assert {"P95ResponseTime", "ResponseTimeSketch", "ResponseTimeCount"} <= columns
    with engine.connect() as conn:
        assert (
            conn.execute(
                text('SELECT "RequestCount" FROM "DataPumpResponseTimeAggregation"')
            ).scalar()
            == 10
        )
        types = conn.execute(
            text(
                'SELECT "TimeStampTypeId", "Name", "HierarchyLevel" FROM "TimeStampType" ORDER BY 1'
            )
        ).all()
        metrics = conn.execute(
            text('SELECT "MetricTypeId", "Name", "Unit" FROM "MetricType" ORDER BY 1')
        ).all()
    assert [tuple(t) for t in types] == [(1, "Hourly", 1), (2, "Daily", 2), (3, "Weekly", 3)]
    assert [tuple(m) for m in metrics[:3]] == [
        (1, "AvgResponseTime", "ms"),
        (2, "AvgErrorRate", "Percentage"),
        (3, "AvgTimeOutErrorRate", "Percentage"),
    ]
    assert {"P50ResponseTime", "P95ResponseTime", "P99ResponseTime", "Throughput"} <= {
        m[1] for m in metrics
    }
    indexes = {i["name"] for i in insp.get_indexes("DataPumpErrorAggregation")}
    assert "IX_DataPumpErrorAggregation_Type_Start" in indexes
    engine.dispose()


def test_one_row_per_biller_level_and_start_is_enforced(warehouse_url):
    wh = WarehouseResource(url=warehouse_url)
    wh.write_partials(HOURLY, {(5, HOUR): partial_from_rows([("200", 1.0)])})
    table = wh.tables.aggregates["DataPumpErrorAggregation"]
    with pytest.raises(IntegrityError):
        with wh.engine().begin() as conn:
            conn.execute(
                insert(table),
                {
                    "BillerId": 5,
                    "TimeStampTypeId": 1,
                    "StartTime": HOUR,
                    "EndTime": HOUR,
                    "RequestCount": 1,
                    "CreatedDate": HOUR,
                    "UpdatedDate": HOUR,
                },
            )


def test_rewrite_updates_in_place_and_unchanged_rows_are_left_alone(warehouse_url):
    wh = WarehouseResource(url=warehouse_url)
    first = wh.write_partials(HOURLY, {(5, HOUR): partial_from_rows([("200", 1.0)])})
    assert first.inserted == 3
    same = wh.write_partials(
        HOURLY, {(5, HOUR): partial_from_rows([("200", 1.0)])}, now=datetime(2030, 1, 1)
    )
    assert (same.inserted, same.updated, same.unchanged) == (0, 0, 3)
    changed = wh.write_partials(
        HOURLY, {(5, HOUR): partial_from_rows([("500", 1.0)])}, now=datetime(2030, 1, 1)
    )
    assert changed.by_table["DataPumpErrorAggregation"] == {
        "inserted": 0,
        "updated": 1,
        "unchanged": 0,
        "deleted": 0,
    }
    assert changed.by_table["DataPumpResponseTimeAggregation"]["unchanged"] == 1
    engine = wh.engine()
    with engine.connect() as conn:
        row = conn.execute(
            text(
                'SELECT "FailedRequests", "CreatedDate", "UpdatedDate" '
                'FROM "DataPumpErrorAggregation"'
            )
        ).one()
    assert row[0] == 1
    assert str(row[1]).startswith(str(datetime.now().year)) and str(row[2]).startswith("2030")


def test_a_failed_write_leaves_the_previous_rows_intact(tmp_path):
    url = f"sqlite:///{tmp_path}/wh.db"
    wh = WarehouseResource(url=url)
    wh.write_partials(HOURLY, {(5, HOUR): partial_from_rows([("200", 1.0)] * 4)})
    engine = create_engine(url)
    with (
        engine.begin() as conn
    ):  # the third table refuses writes: the whole partition must roll back
        conn.execute(
            text(
                'CREATE TRIGGER boom BEFORE UPDATE ON "DataPumpTimeoutErrorAggregation" '
                "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
        )
    with pytest.raises(Exception, match="disk full"):
        wh.write_partials(HOURLY, {(5, HOUR): partial_from_rows([("504", 1.0)] * 8)})
    with engine.connect() as conn:
        counts = conn.execute(
            text(
                'SELECT r."RequestCount", e."FailedRequests" FROM "DataPumpResponseTimeAggregation" r '
                'JOIN "DataPumpErrorAggregation" e ON e."BillerId" = r."BillerId"'
            )
        ).one()
    assert tuple(counts) == (4, 0)
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER boom"))
    wh.write_partials(HOURLY, {(5, HOUR): partial_from_rows([("504", 1.0)] * 8)})
    with engine.connect() as conn:
        assert (
            conn.execute(
                text('SELECT "TimeOutCount" FROM "DataPumpTimeoutErrorAggregation"')
            ).scalar()
            == 8
        )
    engine.dispose()


def test_hourly_asset_materializes_one_partition_with_lineage_metadata(tmp_path):
    cat, shard, wh = (
        f"sqlite:///{tmp_path}/cat.db",
        f"sqlite:///{tmp_path}/{{shard}}.db",
        f"sqlite:///{tmp_path}/wh.db",
    )
    create_sources(cat, lambda s: shard.replace("{shard}", s), per_hour=5)
    engine = create_engine(shard.replace("{shard}", "alpha"))
    with engine.begin() as conn:
        conn.execute(
            insert(detail_table(ShardNames())),
            [
                {
                    "BillerId": 8,
                    "CreatedDate": HOUR + timedelta(minutes=m),
                    "StatusCode": "200",
                    "ResponseTime": 10.0,
                }
                for m in range(3)
            ],
        )
    engine.dispose()
    instance = DagsterInstance.ephemeral()
    key = f"{HOUR:%Y-%m-%d-%H:%M}"
    result = materialize(
        [build_hourly_aggregates(parse_partitions_start(None))],
        instance=instance,
        partition_key=key,
        resources={
            "catalog": CatalogResource(url=cat),
            "shards": ShardsResource(url_template=shard),
            "warehouse": WarehouseResource(url=wh),
        },
    )
    assert result.success
    mats = result.asset_materializations_for_node("hourly_aggregates")
    assert len(mats) == 3 and {m.partition for m in mats} == {key}
    meta = mats[0].metadata
    assert "DATEADD" not in meta["sql"].value and "unixepoch(" in meta["sql"].value  # shard dialect
    # One partition holds every enabled biller (7, 8, 9): its own figures say so.
    assert meta["billers_written"].value == 3 and meta["billers_not_written"].value == 0
    assert meta["requests"].value > 0
    # The run's totals are the run's (tags), not the partition's.
    assert "run_requests" not in meta
    tags = instance.get_run_by_id(result.run_id).tags
    assert tags["metrics/run_biller_windows"] == "3" and "inserted 3" in tags["metrics/run_rows"]
    [check] = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert check.partition == key and check.passed and check.check_name == "coverage"
    assert check.metadata["expected_billers"].value == "3"


def test_the_coverage_check_alone_over_a_range_of_hours_as_a_backfill_runs_it(tmp_path):
    from dagster import AssetCheckKey, AssetSelection, Definitions, define_asset_job

    from metrics_pipeline.datapump.assets.reporting import COVERAGE_ASSET
    from metrics_pipeline.datapump.refresh import range_tags
    from metrics_pipeline.definitions import build_definitions
    from metrics_pipeline.semantics import HOURLY
    from tests.support import sqlite_environment

    env = sqlite_environment(tmp_path, per_hour=2)
    defs = build_definitions(env, resolve=True)
    first, last = HOUR, HOUR + timedelta(hours=2)
    tags = range_tags(HOURLY, parse_partitions_start(None), first, last)
    with DagsterInstance.ephemeral() as instance:
        assert (
            defs.resolve_job_def("hourly_job")
            .execute_in_process(instance=instance, tags=tags)
            .success
        )
        check = AssetCheckKey(COVERAGE_ASSET, "coverage")
        only = define_asset_job("coverage_only", selection=AssetSelection.checks(check))
        job = Definitions.merge(defs, Definitions(jobs=[only])).resolve_job_def("coverage_only")
        result = job.execute_in_process(instance=instance, tags=tags)
    assert result.success
    evaluations = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert all(e.passed for e in evaluations)
    # One evaluation per hour of the range (Dagster keeps a range run's result without a
    # partition: that one is the run's summary).
    assert sorted(e.partition for e in evaluations if e.partition) == [
        f"{HOUR + timedelta(hours=i):%Y-%m-%d-%H:%M}" for i in range(3)
    ]
    [summary] = [e for e in evaluations if e.partition is None]
    assert summary.description.startswith("3 of 3 partitions passed")
