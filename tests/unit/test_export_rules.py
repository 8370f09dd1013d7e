"""The pure parts of exports: the lifecycle rule, the signed tokens, the keyset statements (which
must also be T-SQL)."""

from datetime import datetime

import pytest
import sqlglot
from sqlalchemy.dialects import mssql
from sqlglot import exp

from metrics_pipeline.api.exports.lifecycle import TaskTimes, Timings, gone_at, queue_of
from metrics_pipeline.api.exports.objects import PUBLISHED
from metrics_pipeline.api.exports.queries import page_query, snapshot_query
from metrics_pipeline.api.exports.tokens import BadToken, PageToken
from metrics_pipeline.sql.warehouse import build_warehouse

T = Timings()


@pytest.mark.parametrize(
    ("times", "now", "queue"),
    [
        (TaskTimes(0), 0, "active"),
        (TaskTimes(0), 240, "active"),
        (TaskTimes(0), 240.5, "stale"),
        (TaskTimes(0), 539.9, "stale"),
        (TaskTimes(0), 540, "draining"),
        (TaskTimes(0), 544.9, "draining"),
        (TaskTimes(0), 545, "gone"),
        (TaskTimes(100, completed_at=50), 399, "completed"),  # from the last activity
        (TaskTimes(100, completed_at=50), 400, "draining"),
        (TaskTimes(100, completed_at=50), 405, "gone"),
        (TaskTimes(0, completed_at=10), 250, "completed"),  # completed is never stale
        (TaskTimes(0, canceled_at=7), 7, "draining"),
        (TaskTimes(0, completed_at=3, canceled_at=7), 11.9, "draining"),
        (TaskTimes(0, canceled_at=7), 12, "gone"),
    ],
)
def test_queue_of(times, now, queue):
    assert queue_of(times, now, T) == queue
    if queue == "gone":
        assert now >= gone_at(times, T)
    else:
        assert now < gone_at(times, T)


def test_custom_timings():
    t = Timings(completed_s=10, draining_s=1, stale_after_s=2, stale_resume_s=3)
    assert queue_of(TaskTimes(0), 3, t) == "stale"
    assert queue_of(TaskTimes(0), 5, t) == "draining"
    assert queue_of(TaskTimes(0, completed_at=0), 10.5, t) == "draining"


def test_tokens_verify_only_under_their_secret_and_unchanged():
    token = PageToken("task", 3, "caller", "query").sign(b"k" * 32)
    assert PageToken.verify(token, b"k" * 32) == PageToken("task", 3, "caller", "query")
    with pytest.raises(BadToken):
        PageToken.verify(token, b"j" * 32)
    body, _, mac = token.partition(".")
    forged = PageToken("task", 4, "caller", "query").sign(b"k" * 32).partition(".")[0]
    for bad in (f"{forged}.{mac}", body, f"{body}.", f".{mac}", token + "A", "", "a.b.c"):
        with pytest.raises(BadToken):
            PageToken.verify(bad, b"k" * 32)


def tsql(statement) -> str:
    return str(
        statement.compile(dialect=mssql.dialect(), compile_kwargs={"render_postcompile": True})
    )


@pytest.mark.parametrize("name", sorted(PUBLISHED))
@pytest.mark.parametrize("billers", [None, (11, 12)])
def test_export_statements_are_tsql_with_top_and_no_tuple_in(name, billers):
    obj = PUBLISHED[name]
    table = obj.table(build_warehouse())
    start, end = datetime(2025, 3, 1), datetime(2025, 3, 10)
    after = [12, 1, datetime(2025, 3, 2, 5)]
    statements = [
        snapshot_query(obj, table, start, end, billers),
        page_query(obj, table, start, end, billers, 1234, None, 101),
        page_query(obj, table, start, end, billers, 1234, after, 101),
        page_query(obj, table, start, end, billers, None, after, 101),
    ]
    for statement in statements:
        sql = tsql(statement)
        assert "LIMIT" not in sql.upper(), sql
        tree = sqlglot.parse_one(sql, read="tsql")
        for node in tree.find_all(exp.In):
            assert not isinstance(node.this, exp.Tuple), sql
        assert not list(tree.find_all(exp.Tuple)), sql
        if "ORDER BY" in sql:
            assert sql.lstrip().upper().startswith("SELECT TOP"), sql


def test_the_keyset_condition_is_strictly_after_the_key():
    obj = PUBLISHED["DataPumpErrorAggregation"]
    table = obj.table(build_warehouse())
    after = [12, 1, datetime(2025, 3, 2, 5)]
    sql = str(
        page_query(obj, table, datetime(2025, 3, 1), datetime(2025, 3, 10), None, 9, after, 5)
    )
    assert '"BillerId" > ' in sql
    assert '"TimeStampTypeId" > ' in sql
    assert '"StartTime" > ' in sql
    assert '"DataPumpErrorAggregationId" <= ' in sql
