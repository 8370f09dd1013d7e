"""What `metrics-pipeline materialize` says about shards that look wrong: a template that cannot
tell shards apart is refused before anything is written; rows in no hour are named per biller
(exit 1); a shard without a row of its billers is named on stderr."""

from sqlalchemy import MetaData, create_engine, inspect, text

from metrics_pipeline.cli import main
from metrics_pipeline.datapump.sql import ShardNames, detail_table, occupancy_table
from tests.support import sqlite_environment

WINDOW = ["materialize", "--start", "2025-03-02T00:00Z", "--end", "2025-03-02T06:00Z"]


def run(env, capsys) -> tuple[int, str, str]:
    code = main(WINDOW, environ=env)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_template_without_shard_is_refused_before_anything_is_written(tmp_path, capsys):
    env = sqlite_environment(tmp_path, per_hour=2)
    env["METRICS_SHARD_URL_TEMPLATE"] = f"sqlite:///{tmp_path}/alpha.db"
    code, _, err = run(env, capsys)
    assert code == 2
    assert err.count("\n") == 1 and "has no {shard}" in err and "2 shards (alpha, beta)" in err
    engine = create_engine(env["METRICS_WAREHOUSE_URL"])
    tables = inspect(engine).get_table_names()
    if "DataPumpErrorAggregation" in tables:
        with engine.connect() as conn:
            assert (
                conn.execute(text('SELECT COUNT(*) FROM "DataPumpErrorAggregation"')).scalar() == 0
            )
    engine.dispose()


def test_undated_rows_are_named_per_biller_and_exit_1(tmp_path, capsys):
    env = sqlite_environment(tmp_path, per_hour=2)
    shard = create_engine(env["METRICS_SHARD_URL_TEMPLATE"].replace("{shard}", "alpha"))
    with shard.begin() as conn:
        for created in ("", "not a date", "2025-03-02t01:00:00", " 2025-03-02 01:00:00"):
            conn.execute(
                text(
                    'INSERT INTO "DataPumpDetail" ("BillerId", "CreatedDate", "StatusCode", '
                    "\"ResponseTime\") VALUES (7, :c, '200', 10)"
                ),
                {"c": created},
            )
    shard.dispose()
    code, _, err = run(env, capsys)
    assert code == 1
    assert "biller 7: 4 row(s) with a NULL or unreadable CreatedDate" in err
    assert "biller 8" not in err and "biller 9" not in err


def test_a_shard_without_rows_of_its_billers_is_named(tmp_path, capsys):
    env = sqlite_environment(tmp_path, per_hour=2)
    # Biller 9 moved to an empty shard "gamma" (its tables exist, its rows stayed in beta).
    gamma = create_engine(env["METRICS_SHARD_URL_TEMPLATE"].replace("{shard}", "gamma"))
    md = MetaData()
    detail_table(ShardNames(), md), occupancy_table(ShardNames(), md)
    md.create_all(gamma)
    gamma.dispose()
    catalog = create_engine(env["METRICS_CATALOG_URL"])
    with catalog.begin() as conn:
        conn.execute(
            text('UPDATE "BillerElasticOptions" SET "ShardName" = \'gamma\' WHERE "BillerId" = 9')
        )
    catalog.dispose()
    code, _, err = run(env, capsys)
    assert code == 0
    assert "warning: shard gamma has no row of its billers (9)" in err
    assert "shard alpha" not in err and "shard beta" not in err
