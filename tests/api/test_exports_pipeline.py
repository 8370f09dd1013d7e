"""Acceptance, as a new user would check it: a warehouse materialized by the pipeline from shards
it has never seen is exported page by page while the pipeline writes again (rows updated in
place, a new biller's rows inserted): every row of the snapshot comes once, nothing else."""

from datetime import datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, insert

from metrics_pipeline.api import ApiSettings, create_app
from metrics_pipeline.cli import main
from metrics_pipeline.datapump.sql import (
    CatalogNames,
    ShardNames,
    catalog_table,
    detail_table,
    occupancy_table,
)
from tests.support import WINDOW_END, WINDOW_START, sqlite_environment

from .exports_support import keys_of, table_keys
from .helpers import LOOPBACK_CLIENT

OBJECT = "DataPumpResponseTimeAggregation"
WIDE = (datetime(2025, 2, 23), datetime(2025, 3, 9))
NEW_BILLER = 11


def materialize(env) -> int:
    return main(
        ["materialize", "--start", WINDOW_START.isoformat(), "--end", WINDOW_END.isoformat()],
        environ=env,
    )


def more_calls(env) -> None:
    """Calls of biller 7 in every hour (its rows change), and a new biller 11 on shard beta."""
    sn, cn = ShardNames(), CatalogNames()
    engine = create_engine(env["METRICS_CATALOG_URL"])
    with engine.begin() as conn:
        conn.execute(
            insert(catalog_table(cn)),
            {
                cn.biller_id: NEW_BILLER,
                cn.biller_name: "new",
                cn.shard_name: "beta",
                cn.enabled: True,
            },
        )
    engine.dispose()
    hours = [WINDOW_START + timedelta(hours=h) for h in range(72)]
    for shard, biller in (("alpha", 7), ("beta", NEW_BILLER)):
        engine = create_engine(env["METRICS_SHARD_URL_TEMPLATE"].replace("{shard}", shard))
        with engine.begin() as conn:
            if biller == NEW_BILLER:
                conn.execute(
                    insert(occupancy_table(sn)),
                    {sn.occupancy_biller_id: biller, sn.processing: False},
                )
            conn.execute(
                insert(detail_table(sn)),
                [
                    {
                        sn.biller_id: biller,
                        sn.created: h + timedelta(minutes=7),
                        sn.response_time: 4321.0,
                        sn.status_code: "500",
                    }
                    for h in hours
                ],
            )
        engine.dispose()


def test_an_export_of_a_materialized_warehouse_is_exact_while_the_pipeline_writes(tmp_path):
    env = sqlite_environment(tmp_path)
    assert materialize(env) == 0
    url = env["METRICS_WAREHOUSE_URL"]
    snapshot = table_keys(url, OBJECT, *WIDE)
    assert snapshot
    before = {k: None for k in snapshot}

    def pipeline_writes_again():
        more_calls(env)
        assert materialize(env) == 0

    app = create_app(ApiSettings(warehouse_url=url))
    params = {"fromDate": WIDE[0].isoformat(), "toDate": WIDE[1].isoformat(), "pageSize": 40}
    with TestClient(app, client=LOOPBACK_CLIENT) as c:
        path = f"/api/v2/exports/{OBJECT}"
        first = c.get(path, params=params)
        assert first.status_code == 200, first.text
        rows = list(first.json()["rows"])
        pipeline_writes_again()
        token = first.json()["continuationToken"]
        while token:
            r = c.get(path, params={**params, "continuationToken": token})
            assert r.status_code == 200, r.text
            rows.extend(r.json()["rows"])
            token = r.json()["continuationToken"]
        status = c.get(f"/api/v2/exports-status/{first.headers['export-task-id']}").json()
    after = table_keys(url, OBJECT, *WIDE)
    assert len(after) > len(snapshot)  # the new biller's rows were written meanwhile
    served = keys_of(rows)
    assert sorted(served) == snapshot and len(set(served)) == len(served)
    assert all(key in before for key in served)
    assert NEW_BILLER not in {r["BillerId"] for r in rows}
    # Biller 7's rows were rewritten in place; pages read after the write carry the new values.
    changed = [r for r in rows if r["BillerId"] == 7 and r["TimeStampTypeId"] == 1]
    assert any(float(r["AvgResponseTime"] or 0) > 1000 for r in changed)
    assert status["accumulate"] == len(snapshot) and status["queue"] == "completed"
    # Every exported row says how much it knows: whole hours, days and weeks here.
    hours_of = {1: 1, 2: 24, 3: 168}
    assert all(
        (r["CoveredHours"], r["ExpectedHours"]) == (hours_of[r["TimeStampTypeId"]],) * 2
        for r in rows
    )
