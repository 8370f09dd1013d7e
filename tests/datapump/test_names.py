"""Real deployments name things differently: every table and column name comes from config."""

from datetime import datetime, timedelta

from sqlalchemy import MetaData, create_engine, insert

from metrics_pipeline.datapump.pipeline import aggregate_hourly
from metrics_pipeline.datapump.shards import CatalogResource, ShardsResource
from metrics_pipeline.datapump.sql import (
    CatalogNames,
    ShardNames,
    catalog_table,
    detail_table,
    occupancy_table,
)
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import HOURLY, partial_from_rows

CATALOG = CatalogNames(
    table="Billers", biller_id="Id", biller_name="Name", shard_name="Db", enabled="PumpOn"
)
SHARD = ShardNames(
    detail_table="Calls",
    detail_id="CallId",
    biller_id="Biller",
    created="StartedUtc",
    response_time="Ms",
    status_code="Http",
    occupancy_table="Locks",
    occupancy_biller_id="Biller",
    processing="Busy",
)
HOUR = datetime(2025, 6, 1, 10)


def test_renamed_tables_and_columns_are_read(tmp_path):
    cat_url, shard_url = f"sqlite:///{tmp_path}/cat.db", f"sqlite:///{tmp_path}/{{shard}}.db"
    engine = create_engine(cat_url)
    md = MetaData()
    t = catalog_table(CATALOG, md)
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(t), {"Id": 5, "Name": "x", "Db": "s1", "PumpOn": True})
    engine = create_engine(shard_url.replace("{shard}", "s1"))
    md = MetaData()
    calls, locks = detail_table(SHARD, md), occupancy_table(SHARD, md)
    md.create_all(engine)
    rows = [("200", 10.0), ("504", 20.0), (None, 5.0), ("302", None)]
    with engine.begin() as conn:
        conn.execute(insert(locks), {"Biller": 5, "Busy": False})
        conn.execute(
            insert(calls),
            [
                {"Biller": 5, "StartedUtc": HOUR + timedelta(minutes=i), "Http": s, "Ms": rt}
                for i, (s, rt) in enumerate(rows)
            ],
        )
    config = {f: getattr(SHARD, f) for f in SHARD.__dataclass_fields__ if f != "schema"}
    catalog_config = {f: getattr(CATALOG, f) for f in CATALOG.__dataclass_fields__ if f != "schema"}
    warehouse = WarehouseResource(url=f"sqlite:///{tmp_path}/wh.db")
    outcome = aggregate_hourly(
        {5: [HOUR]},
        CatalogResource(url=cat_url, names=catalog_config),
        ShardsResource(url_template=shard_url, names=config),
        warehouse,
    )
    assert not outcome.failed
    [got] = warehouse.read_partials(HOURLY, [5], HOUR, HOUR + timedelta(hours=1)).values()
    want = partial_from_rows(rows)
    assert (got.request_count, got.failed_count, got.timeout_count) == (4, 2, 1)
    assert got.total_response_time == want.total_response_time
