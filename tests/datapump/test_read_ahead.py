"""The read-ahead of ``materialize``'s hourly runs: the first run's shard reads start with the
command, the next run's when a run has read its own, and a run takes them only when they are
the reads it would make; what it writes is what it would have written reading every shard
itself, and a shard's first cursor is taken before any of its rows is read."""

from datetime import timedelta

from sqlalchemy import create_engine, text

from metrics_pipeline.coverage import DATAPUMP
from metrics_pipeline.datapump.pipeline import aggregate_hourly, first_cursors, read_ahead
from metrics_pipeline.datapump.shards import CatalogResource, ShardsResource
from metrics_pipeline.resources.warehouse import WarehouseResource
from tests.support import WINDOW_START, create_sources, warehouse_rows

BILLERS = (7, 8, 9)


def _sources(tmp_path, name: str):
    shard = f"sqlite:///{tmp_path}/{name}_{{shard}}.db"
    create_sources(f"sqlite:///{tmp_path}/{name}_cat.db", lambda s: shard.replace("{shard}", s))
    return (
        CatalogResource(url=f"sqlite:///{tmp_path}/{name}_cat.db"),
        ShardsResource(url_template=shard),
        WarehouseResource(url=f"sqlite:///{tmp_path}/{name}_wh.db"),
        shard,
    )


def _runs():
    days = [[WINDOW_START + timedelta(days=d, hours=h) for h in range(24)] for d in range(3)]
    return [{b: day for b in BILLERS} for day in days]


def _materialize(catalog, shards, warehouse, runs, ahead_runs=None):
    planned = runs if ahead_runs is None else ahead_runs
    with read_ahead(planned, catalog, shards, warehouse, with_cursors=False) as ahead:
        outcomes = [aggregate_hourly(run, catalog, shards, warehouse) for run in runs]
    return ahead.taken, outcomes


def test_the_next_runs_reads_are_taken_and_write_what_reading_them_would(tmp_path):
    catalog, shards, warehouse, _ = _sources(tmp_path, "ahead")
    taken, outcomes = _materialize(catalog, shards, warehouse, _runs())
    alone, shards2, warehouse2, _ = _sources(tmp_path, "alone")
    for run in _runs():
        aggregate_hourly(run, alone, shards2, warehouse2)
    # Every run took every read of its two shards (alpha: 7 and 8, beta: 9), two each.
    assert taken == 3 * 4
    assert all(not o.failed for o in outcomes)
    assert warehouse_rows(warehouse.url, 1) == warehouse_rows(warehouse2.url, 1)
    assert len(warehouse_rows(warehouse.url, 1)) == 3 * 72


def test_reads_that_are_not_the_next_runs_own_are_not_taken(tmp_path):
    catalog, shards, warehouse, shard_url = _sources(tmp_path, "other")
    runs = _runs()
    # Planned with other billers than the runs read: alpha's reads (7 without 8) do not fit;
    # beta's (9 alone) do, in the first run; a run that is not the planned one starts nothing.
    planned = [{b: hours for b, hours in run.items() if b != 8} for run in runs]
    taken, _ = _materialize(catalog, shards, warehouse, runs, planned)
    assert taken == 2
    # A biller busy when its shard would be read ahead: that shard is left to the run.
    engine = create_engine(shard_url.replace("{shard}", "alpha"))
    with engine.begin() as conn:
        conn.execute(text('UPDATE "BillerDataPump" SET "Processing" = 1 WHERE "BillerId" = 8'))
    engine.dispose()
    busy = ShardsResource(url_template=shard_url, busy_retries=0)
    taken, outcomes = _materialize(catalog, busy, warehouse, runs)
    assert all(set(o.busy) == {8} for o in outcomes)
    # Only beta's two reads (biller 9) were taken, in every run; 7 was read by the runs.
    assert taken == 3 * 2
    assert all(len(o.request_counts) == 2 * 24 for o in outcomes)


def test_first_cursors_are_taken_before_the_first_reads_ahead_and_saved_by_the_run(tmp_path):
    catalog, shards, warehouse, shard_url = _sources(tmp_path, "cursor")
    runs = _runs()
    with read_ahead(runs, catalog, shards, warehouse) as ahead:
        assert set(ahead.cursors) == {"alpha", "beta"}
        # A call that lands once the read-ahead has its cursors: beyond them, left to the refresh.
        engine = create_engine(shard_url.replace("{shard}", "alpha"))
        with engine.begin() as conn:
            conn.execute(
                text(
                    'INSERT INTO "DataPumpDetail" ("BillerId", "CreatedDate", "ResponseTime", '
                    "\"StatusCode\") VALUES (7, :c, 5.0, '200')"
                ),
                {"c": runs[0][7][0].isoformat(" ")},
            )
        engine.dispose()
        cursors = first_cursors(catalog, shards, warehouse)
        assert cursors == ahead.cursors
        for run in runs:
            aggregate_hourly(run, catalog, shards, warehouse, cursors=cursors)
            cursors = first_cursors(catalog, shards, warehouse)
            assert cursors == {}  # saved with the first run's rows
    # The first run read each shard whole, with its cursor (one read each), the others in two.
    assert ahead.taken == 2 + 4 + 4
    assert warehouse.read_cursors(DATAPUMP) == ahead.cursors
