"""Every statement the pipeline sends compiles for SQL Server and parses as T-SQL; the shard
query computes the documented rules on a real database."""

import json
import re
from datetime import datetime, timedelta

import pytest
import sqlglot
from sqlalchemy import Engine, MetaData, create_engine, event, insert
from sqlalchemy.dialects import mssql, postgresql
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql.elements import TextClause

from metrics_pipeline.coverage import LedgerEntry
from metrics_pipeline.datapump.backlog import BacklogSettings, find_backlog
from metrics_pipeline.datapump.pipeline import (
    aggregate_hourly,
    detect_changes,
    first_cursors,
    reconcile,
    roll_up,
)
from metrics_pipeline.datapump.shards import CatalogResource, ShardsResource
from metrics_pipeline.datapump.sql import (
    ShardForm,
    ShardNames,
    detail_table,
    fold_hourly_rows,
    guided_percentiles_query,
    hourly_facts_query,
    hourly_percentiles_query,
)
from metrics_pipeline.resources.cursor import ShardCursor
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import DAILY, HOURLY, WEEKLY, Rules, Sketch, partial_from_rows
from metrics_pipeline.sql.warehouse import add_column_ddl, build_warehouse
from tests.support import EDGE_ROWS, WINDOW_START, create_sources

MSSQL = mssql.dialect()
ROW_VALUE_IN = re.compile(r"\([^()]*,[^()]*\)\s+IN\s*\(\s*SELECT", re.IGNORECASE)


def assert_tsql(statement) -> str:
    """Compile for SQL Server and parse the text as T-SQL (raises on anything T-SQL lacks)."""
    if isinstance(statement, str):
        sql = statement
    else:
        sql = str(statement.compile(dialect=MSSQL, compile_kwargs={"render_postcompile": True}))
    for banned in (
        " LIMIT ",
        "WITHIN GROUP",
        "date_trunc",
        "strftime",
        "unixepoch",
        "julianday",
        " GLOB ",
        "::",
    ):
        assert banned.lower() not in sql.lower(), (banned, sql)
    # Row values ("(a, b) IN (SELECT ...)"): sqlglot parses them, SQL Server has none.
    assert not ROW_VALUE_IN.search(sql), sql
    parsed = sqlglot.parse(sql, read="tsql", error_level=sqlglot.ErrorLevel.RAISE)
    assert parsed and parsed[0] is not None
    return sql


@pytest.fixture
def captured(tmp_path):
    """Runs hourly, daily and weekly aggregation on SQLite and records every statement sent."""
    statements = []

    def record(conn, clauseelement, multiparams, params, execution_options):
        statements.append(clauseelement)

    env = {
        "cat": f"sqlite:///{tmp_path}/cat.db",
        "shard": f"sqlite:///{tmp_path}/{{shard}}.db",
        "wh": f"sqlite:///{tmp_path}/wh.db",
    }
    create_sources(env["cat"], lambda s: env["shard"].replace("{shard}", s), per_hour=3)
    event.listen(Engine, "before_execute", record)
    try:
        catalog = CatalogResource(url=env["cat"])
        shards = ShardsResource(url_template=env["shard"], chunk_biller_hours=12)
        warehouse = WarehouseResource(url=env["wh"])
        hours = [WINDOW_START + timedelta(hours=h) for h in range(48)]
        aggregate_hourly({7: hours, 9: hours}, catalog, shards, warehouse)
        shards.busy_billers("alpha", [7, 8])
        late = create_engine(env["shard"].replace("{shard}", "alpha"))
        with late.begin() as conn:  # a late call, so the second pass takes the update path
            conn.execute(
                insert(detail_table(ShardNames())),
                {"BillerId": 7, "CreatedDate": hours[3], "StatusCode": "500", "ResponseTime": 1.0},
            )
        late.dispose()
        aggregate_hourly({7: hours}, catalog, shards, warehouse)
        now, first = hours[-1], datetime(2025, 1, 5)
        roll_up({7: [WINDOW_START, WINDOW_START + timedelta(days=1)]}, DAILY, warehouse, now, first)
        roll_up({7: [datetime(2025, 2, 23)]}, WEEKLY, warehouse, now, first)
        # A busy hour over a written one (its rows stop covering it), and a day with no written
        # hour (its row is deleted).
        warehouse.record_ledger("datapump", HOURLY, [LedgerEntry("7", hours[5], "busy", "busy")])
        roll_up({7: [WINDOW_START - timedelta(days=3)]}, DAILY, warehouse, now, first)
        # Change detection (first look, then by cursor), cursors, reconciliation, the ledger.
        cursors = first_cursors(catalog, shards, warehouse)
        aggregate_hourly({7: hours[:2]}, catalog, shards, warehouse, cursors=cursors)
        detect_changes(catalog, shards, warehouse, hours[-1], timedelta(minutes=15), 10)
        changes = detect_changes(catalog, shards, warehouse, hours[-1], timedelta(minutes=15), 10)
        for shard, cursor in changes.cursors.items():
            warehouse.advance_cursor("datapump", shard, cursor)
        shards.changed_cells("alpha", [7, 8], ShardCursor(5, (2, 3)), hours[0], 10)
        reconcile(catalog, shards, warehouse, hours[0], hours[4])
        find_backlog(warehouse, [7, 8, 9], hours[-1], BacklogSettings(), hours[0])
        warehouse.read_ledger("datapump", HOURLY, states=("busy",), updated_after=hours[0])
    finally:
        event.remove(Engine, "before_execute", record)
    return statements


def test_every_statement_sent_is_valid_tsql(captured):
    kinds = set()
    for statement in captured:
        if isinstance(statement, TextClause):
            continue  # the SQLite dialect's own reflection; the ALTER is checked below
        kinds.add(type(statement).__name__)
        assert_tsql(statement)
    assert {"Select", "Insert", "Update", "Delete", "CreateTable", "CreateIndex"} <= kinds


def test_warehouse_ddl_and_upgrade_are_tsql():
    wh = build_warehouse(schema="dbo")
    for table in wh.metadata.sorted_tables:
        assert_tsql(CreateTable(table))
        for index in table.indexes:
            assert_tsql(CreateIndex(index))
        sql = assert_tsql(add_column_ddl(table, list(table.columns)[-1], MSSQL))
        assert sql.startswith("ALTER TABLE dbo.[")
    ddl = str(CreateTable(wh.aggregates["DataPumpErrorAggregation"]).compile(dialect=MSSQL))
    assert "IDENTITY" in ddl and "UNIQUE" in ddl


def test_shard_queries_in_each_dialect_are_well_formed():
    args = (ShardNames(), Rules(), [1, 2], datetime(2025, 1, 1), datetime(2025, 1, 2))
    facts = hourly_facts_query(*args)
    ranks = hourly_percentiles_query(ShardNames(), *args[2:])
    targets = {(1, "2025-01-01 03:00:00", 520, 7): [((1, datetime(2025, 1, 1, 3)), 50)]}
    guided = guided_percentiles_query(ShardNames(), *args[2:], targets)
    for q in (facts, ranks, guided):
        sql = assert_tsql(q)
        assert "DATEADD(hour, DATEDIFF(hour, 0," in sql
        pg = str(q.compile(dialect=postgresql.dialect()))
        sqlglot.parse(pg.replace("%(", "(").replace(")s", ")"), read="postgres")
    # The targets travel as one JSON parameter, read by SQL Server as a table (a semi-join).
    tsql = assert_tsql(guided)
    assert tsql.count("EXISTS (SELECT 1 FROM OPENJSON(") == 2
    assert "h DATETIME2 '$.h'" in tsql
    params = guided.compile(dialect=MSSQL).params
    assert [k for k in params if "targets" in k] == ["targets"]
    assert json.loads(params["targets"]) == [{"b": 1, "h": "2025-01-01 03:00:00", "k": 520, "r": 7}]
    assert ROW_VALUE_IN.search(str(guided.compile(dialect=postgresql.dialect())))
    tsql = assert_tsql(facts)
    assert "TRY_CAST" in tsql
    # The sketch leaves the shard as one string per biller-hour, unbounded on SQL Server.
    assert "STRING_AGG(CASE WHEN" in tsql and "AS VARCHAR(MAX))" in tsql


def test_bucket_counts_read_back_including_negative_and_repeated_buckets():
    assert Sketch.decode(None).counts == {} and Sketch.decode("").counts == {}
    sketch = Sketch.decode("17:5,-1000000:2,-3:1,17:2")
    assert sketch.counts == {-1000000: 2, -3: 1, 17: 7}
    assert sketch.encode() == "-1000000:2,-3:1,17:7"
    merged = Sketch.decode("17:5,4:1")
    merged.merge(Sketch.decode("4:1,-3:2"))
    assert merged.counts == {-3: 2, 4: 2, 17: 5}
    for bad in ("17,3", "17:x,3:1", "17:1,3"):
        with pytest.raises(ValueError, match="not index:count pairs"):
            Sketch.decode(bad).encode()


def _rows_db(url: str):
    engine = create_engine(url)
    md = MetaData()
    t = detail_table(ShardNames(), md)
    md.create_all(engine)
    rows = [(WINDOW_START + off, st, rt) for off, st, rt in EDGE_ROWS]
    with engine.begin() as conn:
        conn.execute(
            insert(t),
            [
                {"BillerId": 1, "CreatedDate": c, "StatusCode": s, "ResponseTime": r}
                for c, s, r in rows
            ],
        )
    return engine, rows


#: Configured rules unlike the defaults: timeout "words" of digits ("302" is a status of the edge
#: rows: the three-digit text path must still see it), other timeout codes, a narrower success
#: range, a lower slow threshold.
ODD_RULES = Rules(
    timeout_status_codes=(504, 599),
    timeout_words=("timeout", "0408", "abc", "302"),
    timeout_threshold_ms=5000.0,
    success_min=200,
    success_max=299,
)


@pytest.mark.parametrize(
    "form",
    [ShardForm(), ShardForm(calls_listed=True)],
    ids=["sketch by bucket", "calls listed"],
)
@pytest.mark.parametrize("rules", [Rules(), ODD_RULES], ids=["default rules", "odd rules"])
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_shard_query_applies_the_rules_exactly(backend, rules, form, tmp_path, request):
    url = (
        f"sqlite:///{tmp_path}/s.db"
        if backend == "sqlite"
        else request.getfixturevalue("pg_databases").create()
    )
    engine, rows = _rows_db(url)
    start, end = WINDOW_START, WINDOW_START + timedelta(days=3)
    with engine.connect() as conn:
        got = fold_hourly_rows(
            conn.execute(hourly_facts_query(ShardNames(), rules, [1], start, end, form)),
            conn.execute(hourly_percentiles_query(ShardNames(), [1], start, end)),
        )
    engine.dispose()
    by_hour: dict = {}
    for created, status, rt in rows:
        by_hour.setdefault(created.replace(minute=0, second=0, microsecond=0), []).append(
            (status, rt)
        )
    assert set(got) == {(1, h) for h in by_hour}
    for hour, hour_rows in by_hour.items():
        want, have = partial_from_rows(hour_rows, rules), got[(1, hour)]
        assert (have.request_count, have.failed_count, have.timeout_count) == (
            want.request_count,
            want.failed_count,
            want.timeout_count,
        ), hour
        assert have.response_time_count == want.response_time_count
        assert have.total_response_time == want.total_response_time
        assert have.sketch.counts == want.sketch.counts
        for p in (50, 95, 99):
            assert have.percentile(p) == want.percentile(p), (hour, p)


def test_health_queries_of_the_ledger_are_tsql():
    from metrics_pipeline.coverage import NOT_WRITTEN, WRITTEN
    from metrics_pipeline.sql.warehouse import (
        ledger_states_query,
        ledger_windows_query,
        newest_window_query,
    )

    ledger = build_warehouse(schema="dbo").ledger
    for statement in (
        ledger_states_query(ledger, HOURLY, NOT_WRITTEN),
        ledger_windows_query(
            ledger, HOURLY, (WRITTEN,), WINDOW_START, WINDOW_START + HOURLY.length
        ),
        ledger_windows_query(ledger, HOURLY, (WRITTEN,), None, WINDOW_START),
        newest_window_query(ledger, HOURLY, (WRITTEN,)),
    ):
        assert "GROUP BY" in assert_tsql(statement)
