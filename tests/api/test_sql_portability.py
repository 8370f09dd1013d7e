"""Every statement the API sends, captured while its endpoints run, also works on SQL Server:
compiled for the mssql dialect it parses as T-SQL, limits rows with TOP (never LIMIT), and has
no tuple IN. Values travel as bound parameters, never in the SQL text."""

import pytest
import sqlglot
from sqlalchemy import event
from sqlalchemy.dialects import mssql
from sqlalchemy.sql.elements import ClauseElement
from sqlglot import exp

from metrics_pipeline.api import ApiSettings, create_app
from metrics_pipeline.api.exports.objects import PUBLISHED

from .helpers import LOOPBACK_CLIENT

RANGE = {"from": "2025-03-01", "to": "2025-03-03"}


@pytest.fixture(scope="module")
def captured(sqlite_warehouse) -> list[ClauseElement]:
    from fastapi.testclient import TestClient

    app = create_app(ApiSettings(warehouse_url=sqlite_warehouse.url))
    statements: list[ClauseElement] = []

    def capture(conn, clauseelement, multiparams, params, execution_options):
        statements.append(clauseelement)

    engine = app.state.metrics.reader.engine
    event.listen(engine, "before_execute", capture)
    with TestClient(app, client=LOOPBACK_CLIENT) as c:
        for metric in range(1, 9):
            for level in (1, 2, 3):
                query = {"metricTypeId": metric, "timeStampTypeId": level, **RANGE, "limit": 5}
                first = c.get("/api/metrics/11", params=query).json()
                if first["continuationToken"]:
                    query["continuationToken"] = first["continuationToken"]
                    assert c.get("/api/metrics/11", params=query).status_code == 200
        assert c.get("/api/metrics/424242", params={**query, "limit": 5}).status_code in (400, 404)
        assert (
            c.get(
                "/api/metrics/424242", params={"metricTypeId": 1, "timeStampTypeId": 1, **RANGE}
            ).status_code
            == 404
        )
        for path in ("/api/billers", "/api/metric-types", "/api/timestamp-types", "/api/health"):
            assert c.get(path).status_code == 200
        # Exports of every published object: snapshot, first page, a keyset page, billers.
        for name in PUBLISHED:
            for extra in ({}, {"billers": "11,12"}):
                query = {"fromDate": "2025-03-01", "toDate": "2025-03-03", "pageSize": 7, **extra}
                first = c.get(f"/api/v2/exports/{name}", params=query)
                assert first.status_code == 200, first.text
                query["continuationToken"] = first.json()["continuationToken"]
                assert c.get(f"/api/v2/exports/{name}", params=query).status_code == 200
    event.remove(engine, "before_execute", capture)
    return statements


def tsql(statement: ClauseElement) -> str:
    return str(
        statement.compile(dialect=mssql.dialect(), compile_kwargs={"render_postcompile": True})
    )


def test_the_capture_covers_every_endpoint(captured):
    texts = [tsql(s) for s in captured]
    for table in (
        "DataPumpResponseTimeAggregation",
        "DataPumpErrorAggregation",
        "DataPumpTimeoutErrorAggregation",
        "MetricType",
        "TimeStampType",
    ):
        assert any(f"[{table}]" in t or f"{table}" in t for t in texts), table
    assert any("DISTINCT" in t for t in texts)  # billers
    assert any(t.strip() == "SELECT 1" for t in texts)  # health
    assert sum("ORDER BY" in t for t in texts) >= 24  # 8 metrics x 3 levels
    assert sum("max(" in t.lower() for t in texts) >= 2 * len(PUBLISHED)  # export snapshots


def test_every_statement_parses_as_tsql_with_top_and_no_limit_or_tuple_in(captured):
    for statement in captured:
        sql = tsql(statement)
        assert "LIMIT" not in sql.upper(), sql
        tree = sqlglot.parse_one(sql, read="tsql")
        assert tree is not None, sql
        for node in tree.find_all(exp.In):
            assert not isinstance(node.this, exp.Tuple), sql
        if isinstance(tree, exp.Select) and "ORDER BY" in sql and "SELECT 1" not in sql:
            assert sql.lstrip().upper().startswith(("SELECT TOP", "SELECT DISTINCT TOP")), sql


def test_values_are_bound_not_formatted(captured):
    with_biller = [s for s in captured if 424242 in s.compile().params.values()]
    assert with_biller, "the unknown biller's statements were captured"
    for statement in with_biller:
        assert "424242" not in str(statement.compile())
        assert "424242" not in tsql(statement)
