"""Every statement the family sends to the warehouse (DDL, reads, writes, SLO and check reads)
compiles for SQL Server and parses as T-SQL: no LIMIT, no tuple IN, values bound."""

from datetime import datetime, timedelta

import pytest
import sqlglot
from sqlalchemy import event
from sqlalchemy.dialects import mssql
from sqlalchemy.schema import DDLElement
from sqlalchemy.sql.elements import ClauseElement
from sqlglot import exp

from metrics_pipeline.availability import pipeline, sql
from tests.availability import events as ev
from tests.availability.conftest import HOUR, reference_rows, write_hours


@pytest.fixture(scope="module")
def captured(tmp_path_factory) -> list[ClauseElement]:
    tmp = tmp_path_factory.mktemp("avail_sql")
    env = {"METRICS_DATA_DIR": str(tmp / "data"), "METRICS_EVENTS_ROOT": str(tmp / "events")}
    statements: list[ClauseElement] = []
    from metrics_pipeline.availability.writer import Store
    from metrics_pipeline.resources import resource_urls
    from metrics_pipeline.resources.engines import create_db_engine

    url = resource_urls(env)["warehouse"]
    store = Store(create_db_engine(url, "warehouse", must_exist=False))
    event.listen(store.engine, "before_execute", lambda conn, clause, *a: statements.append(clause))
    store.ensure_schema()
    reference_rows(store)
    write_hours(tmp / "events")
    pipeline.compute_window(HOUR, HOUR + timedelta(hours=3), env, store=store)
    late = HOUR + timedelta(hours=1)
    ev.write_jsonl(
        ev.hour_folder(tmp / "events", late) / "late.jsonl", ev.random_events(late, 200, 8)
    )
    (ev.hour_folder(tmp / "events", HOUR + timedelta(hours=2)) / "e.jsonl").unlink()
    pipeline.refresh_once(env, now=HOUR + timedelta(hours=3), store=store)
    pipeline.slo_states(store, HOUR + timedelta(hours=3), 100)
    t = store.tables
    for statement in (
        *sql.unknown_counts(t, sql.HOURLY, HOUR, HOUR + timedelta(hours=1)),
        sql.distinct_unknown_scenarios(t, HOUR, HOUR + timedelta(hours=1)),
        sql.translated_minutes(t, HOUR, HOUR + timedelta(hours=1)),
        sql.published_series(t, 1, HOUR, HOUR + timedelta(days=1), ["Checkout", "Search"]),
    ):
        store.read(statement)
    return statements


def tsql(statement: ClauseElement) -> str:
    return str(
        statement.compile(dialect=mssql.dialect(), compile_kwargs={"render_postcompile": True})
    )


def test_the_capture_covers_every_table(captured):
    texts = " ".join(tsql(s) for s in captured)
    for table in (
        "AvailabilityMinute",
        "AvailabilityDaily",
        "AvailabilityPublished",
        "Scenario",
        "Customer",
        "OmsOperation",
        "AvailabilityLatencySketch",
        "AvailabilityIngest",
        "AvailabilityFileCursor",
    ):
        assert f"[{table}]" in texts or f" {table}" in texts, table
    kinds = {type(s).__name__ for s in captured}
    assert {"CreateTable", "Select", "Insert", "Update", "Delete"} <= kinds, kinds


def test_every_statement_parses_as_tsql_without_limit_or_tuple_in(captured):
    for statement in captured:
        text = tsql(statement)
        assert "LIMIT" not in text.upper(), text
        if isinstance(statement, DDLElement):
            continue  # CREATE TABLE: compiled above for mssql; sqlglot's DDL coverage varies
        tree = sqlglot.parse_one(text, read="tsql")
        assert tree is not None, text
        for node in tree.find_all(exp.In):
            assert not isinstance(node.this, exp.Tuple), text


def test_values_are_bound_not_formatted(captured):
    hour_literal = f"{HOUR:%Y-%m-%d %H}"
    for statement in captured:
        if isinstance(statement, DDLElement):
            continue
        assert hour_literal not in tsql(statement)
        assert "Checkout" not in tsql(statement)


def test_ddl_compiles_for_sql_server():
    from sqlalchemy.schema import CreateTable

    for table in sql.build_tables().metadata.sorted_tables:
        text = str(CreateTable(table).compile(dialect=mssql.dialect()))
        assert "UNIQUE" in text or "PRIMARY KEY" in text, table.name
        assert datetime  # naive UTC DateTime columns
