"""Billers' objectives, pure: validation, burn rates over hourly windows with the traffic gate,
the P95 objective, the check's verdict, and the statements that read them (T-SQL too)."""

from datetime import datetime, timedelta

import pytest
import sqlglot
from sqlalchemy.dialects import mssql
from sqlglot import exp

from metrics_pipeline import slo
from metrics_pipeline.datapump.objectives import (
    RATE_KINDS,
    WINDOW_HOURS,
    BillerObjective,
    InvalidObjective,
    Objectives,
    ObjectiveSettings,
    biller_state,
    check_verdict,
    from_row,
    p95_state,
    rate_state,
    validate,
)
from metrics_pipeline.sql.warehouse import (
    ERROR_RATE,
    RESPONSE_TIME,
    build_warehouse,
    hourly_p95_query,
    objectives_query,
    window_sums_query,
)

END = datetime(2026, 12, 3, 8)
ERRORS = RATE_KINDS[0]


@pytest.mark.parametrize(
    "window, grain, expected",
    [
        (timedelta(minutes=5), timedelta(hours=1), timedelta(hours=1)),
        (timedelta(minutes=30), timedelta(hours=1), timedelta(hours=1)),
        (timedelta(hours=6), timedelta(hours=1), timedelta(hours=6)),
        (timedelta(minutes=90), timedelta(hours=1), timedelta(hours=2)),
        (timedelta(minutes=5), timedelta(minutes=1), timedelta(minutes=5)),
    ],
)
def test_windows_at_a_grain_round_up_to_whole_rows(window, grain, expected):
    assert slo.at_grain(window, grain) == expected


def test_the_hourly_windows_are_the_availability_familys_at_hourly_grain():
    assert WINDOW_HOURS == (720, 6, 1)


def test_settings_read_the_minimum_from_the_environment():
    assert ObjectiveSettings.from_env({}).min_requests == 100
    assert ObjectiveSettings.from_env({"METRICS_OBJECTIVE_MIN_REQUESTS": "25"}).min_requests == 25


@pytest.mark.parametrize(
    "args, message",
    [
        ((7, 5), "ErrorRateObjective must be a share strictly between 0 and 1 (0.01 for 1 %)"),
        ((7, 0), "ErrorRateObjective must be a share strictly between 0 and 1"),
        ((7, 1.0), "ErrorRateObjective must be a share strictly between 0 and 1"),
        ((7, None, -0.1), "TimeoutRateObjective must be a share strictly between 0 and 1"),
        ((7, None, None, 0), "P95ResponseTimeObjectiveMs must be above 0 ms"),
        ((7, "abc"), "ErrorRateObjective is not a number: 'abc'"),
        ((7, "nan"), "ErrorRateObjective is not a finite number"),
        ((7,), "no objective given"),
        (("x", 0.1), "BillerId is not an integer"),
        ((0, 0.1), "BillerId must be 1 or more"),
    ],
)
def test_an_impossible_objective_is_one_line_naming_what_is_wrong(args, message):
    with pytest.raises(InvalidObjective) as err:
        validate(*args)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_valid_objective_and_a_row_with_a_percent_by_mistake():
    assert validate("7", "0.01", None, "800") == BillerObjective(7, 0.01, None, 800.0)
    row = {
        "BillerId": 9,
        "ErrorRateObjective": 1.5,  # 1.5 % written as a percentage
        "TimeoutRateObjective": None,
        "P95ResponseTimeObjectiveMs": None,
    }
    found = from_row(row)
    assert isinstance(found, InvalidObjective) and "biller 9" in str(found)


def sums(requests_1h, bad_1h, requests_6h, bad_6h, read_6h=6, requests_30d=None, bad_30d=None):
    return {
        1: (requests_1h, bad_1h, 1 if requests_1h or read_6h else 0),
        6: (requests_6h, bad_6h, read_6h),
        720: (requests_30d or requests_6h, bad_30d if bad_30d is not None else bad_6h, read_6h),
    }


@pytest.mark.parametrize(
    "hour_sums, state, severity",
    [
        # 20 % failing over the last hour against 1 %: 20x >= 14.4 pages
        (sums(1000, 200, 6000, 250), "page", "ERROR"),
        # 7 % over 6 h and the last hour: 7x >= 6 opens a ticket, under 14.4 no page
        (sums(1000, 70, 6000, 420), "ticket", "WARN"),
        # the 6 h window is fine although the last hour burns 7x: both windows must burn
        (sums(1000, 70, 6000, 100), "ok", None),
        (sums(1000, 5, 6000, 30), "ok", None),
        # every request failed, but 40 requests in 6 h is under the minimum of 100
        (sums(10, 10, 40, 40), "not enough traffic", None),
        # nothing read in the last 6 hours: unknown, not zero errors
        (sums(0, 0, 0, 0, read_6h=0), "unknown", None),
    ],
)
def test_rate_burns_page_ticket_or_are_gated(hour_sums, state, severity):
    got = rate_state(ERRORS, 0.01, hour_sums, 100)
    assert (got["state"], got["severity"]) == (state, severity)
    if state == "page":
        assert "error rate burns the 30-day budget 20.0x over 1h and 20.0x over 1h" in got["why"]
        assert "objective 0.01" in got["why"]
    if state == "not enough traffic":
        assert "not enough traffic (40 requests in 6h, minimum 100)" in got["why"]


def test_the_budget_is_what_the_thirty_days_of_read_hours_leave():
    got = rate_state(ERRORS, 0.01, sums(100, 0, 600, 0, requests_30d=100_000, bad_30d=250), 100)
    assert got["budgetRemaining"] == pytest.approx(0.75)
    assert (got["requests30d"], got["bad30d"], got["expectedHours30d"]) == (100_000, 250, 720)
    # At hourly grain the alerts report the windows they read: 1 h for the page's 5 minutes.
    page, ticket = got["alerts"]
    assert (page["long"], page["short"], ticket["long"], ticket["short"]) == (
        3600,
        3600,
        21600,
        3600,
    )


LAST = END - timedelta(hours=1)


@pytest.mark.parametrize(
    "hours, state",
    [
        ({LAST: (500, 950.0), LAST - timedelta(hours=1): (500, 700.0)}, "ticket"),
        ({LAST: (500, 750.0), LAST - timedelta(hours=1): (500, 950.0)}, "ok"),
        ({LAST: (20, 5000.0)}, "not enough traffic"),
        ({LAST - timedelta(hours=1): (500, 950.0)}, "unknown"),
        ({LAST: (500, None)}, "unknown"),
    ],
)
def test_the_p95_objective_judges_the_hour(hours, state):
    got = p95_state(800.0, hours, END, 100)
    assert got["state"] == state
    assert got["severity"] == ("WARN" if state == "ticket" else None)
    if state == "ticket":
        assert (
            "p95 950 ms over the 800 ms objective in the hour from 2026-12-03 07:00" in got["why"]
        )
        assert "1 of 2 read hours of the last 6h over" in got["why"]


def test_a_biller_pages_when_one_objective_pages_and_says_which():
    objective = BillerObjective(7, error_rate=0.01, timeout_rate=0.01, p95_ms=800)
    state = biller_state(
        objective,
        {"errorRate": sums(1000, 10, 6000, 60), "timeoutRate": sums(1000, 200, 6000, 260)},
        {LAST: (900, 950.0)},
        END,
        100,
    )
    assert (state["severity"], state["state"]) == ("ERROR", "page")
    assert "timeout rate burns" in state["why"] and "p95 950 ms" in state["why"]
    assert "error rate" not in state["why"]
    assert state["errorRate"]["state"] == "ok"


def test_a_biller_with_only_a_p95_objective():
    state = biller_state(BillerObjective(7, p95_ms=800), {}, {LAST: (900, 300.0)}, END, 100)
    assert state["errorRate"] is None and state["timeoutRate"] is None
    assert (state["state"], state["severity"]) == ("ok", None)


def test_the_verdict_names_burning_billers_and_lists_the_others_without_failing_for_them():
    burning = biller_state(
        BillerObjective(7, 0.01), {"errorRate": sums(1000, 70, 6000, 420)}, {}, END, 100
    )
    quiet = biller_state(BillerObjective(8, 0.01), {"errorRate": sums(5, 5, 20, 20)}, {}, END, 100)
    found = Objectives({7: burning, 8: quiet}, {9: "biller 9: ErrorRateObjective must be ..."})
    verdict = check_verdict(found, {7: "Acme", 8: None, 9: None, 10: "No Row"}, END)
    assert not verdict["passed"] and verdict["severity"] == "WARN"
    meta = verdict["metadata"]
    assert meta["burning_billers"] == {"7": "7 (Acme): " + burning["why"]}
    assert meta["biller_severity"] == {"7": "WARN"}
    assert meta["not_enough_traffic"] == ["8"]
    assert meta["without_objective"] == ["10"]
    assert set(meta["invalid_objectives"]) == {"9"}
    assert meta["billers"]["7"]["errorRate"]["burn"]["ticket"]["long"] == pytest.approx(7.0)
    assert "1 of 2 billers with objectives burning" in verdict["description"]
    assert "7 (Acme) ticket" in verdict["description"]


def test_nothing_burning_passes():
    quiet = biller_state(BillerObjective(8, 0.01), {"errorRate": sums(5, 5, 20, 20)}, {}, END, 100)
    verdict = check_verdict(Objectives({8: quiet}, {}), {8: None}, END)
    assert verdict["passed"] and verdict["metadata"]["burning_billers"] == {}


WH = build_warehouse()


def tsql(statement) -> str:
    return str(
        statement.compile(dialect=mssql.dialect(), compile_kwargs={"render_postcompile": True})
    )


@pytest.mark.parametrize(
    "statement",
    [
        objectives_query(WH.objectives),
        window_sums_query(WH.table(ERROR_RATE), "FailedRequests", [7, 8], END, WINDOW_HOURS),
        hourly_p95_query(WH.table(RESPONSE_TIME), [7, 8], END - timedelta(hours=6), END),
    ],
)
def test_the_reads_parse_as_tsql_without_limit_or_tuple_in(statement):
    sql = tsql(statement)
    assert "LIMIT" not in sql.upper()
    tree = sqlglot.parse_one(sql, read="tsql")
    assert isinstance(tree, exp.Select)
    for node in tree.find_all(exp.In):
        assert not isinstance(node.this, exp.Tuple)


def test_window_sums_count_only_read_hours_of_each_window():
    sql = tsql(window_sums_query(WH.table(ERROR_RATE), "FailedRequests", [7], END, (720, 6, 1)))
    assert "[CoveredHours] > " in sql
    for h in (720, 6, 1):
        assert f"requests_{h}h" in sql and f"bad_{h}h" in sql and f"hours_{h}h" in sql
    params = window_sums_query(WH.table(ERROR_RATE), "FailedRequests", [7], END, (720, 6, 1))
    values = {v for v in params.compile().params.values() if isinstance(v, datetime)}
    assert {
        END - timedelta(hours=720),
        END - timedelta(hours=6),
        END - timedelta(hours=1),
    } <= values
