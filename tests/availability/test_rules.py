"""Seed 001's rules, one parametrized table per rule (pure: no DuckDB, no database)."""

from decimal import Decimal

import pytest

from metrics_pipeline.availability import rules

OMS = frozenset({"GetQuote", "PlaceOrder"})


@pytest.mark.parametrize(
    "base_type, kept",
    [
        ("Ms.Qos.IncomingServiceRequest", True),
        ("Ms.QoS.IncomingServiceRequest", True),  # the seed spells it both ways
        ("IncomingServiceRequest", True),
        ("incomingservicerequest", True),
        ("OutgoingServiceRequest", False),
        ("Ms.Qos.IncomingServiceRequest ", False),
        ("", False),
        (None, False),
        ("5", False),
    ],
)
def test_base_type(base_type, kept):
    assert rules.is_service_request(base_type) is kept


@pytest.mark.parametrize(
    "env, kept",
    [
        (None, True),
        ("", True),
        ("prod", True),
        ("Production", True),
        ("staging", True),
        ("7", True),
        *(
            (name, False)
            for name in (
                "dev",
                "DEV",
                "int",
                "ppe",
                "non-prod",
                "nonprod",
                "sandbox",
                "perf",
                "test",
            )
        ),
        ("eu-dev", False),
        ("x-int-y", False),
        ("a-ppe", False),
        ("b-sandbox", False),
        ("c-perf", False),
        ("d-test", False),
        ("prod-test", True),  # contains -test, but also prod without non-prod
        ("PROD-PERF", True),
        ("non-prod-us", False),
        # The reading of the expression: an environment naming itself non-prod is
        # dropped even without a '-dev'... part (see the README).
        ("nonprod-eu", False),
        ("nonprod-eu-test", False),
        ("development", True),
        ("integration", True),
        ("eu-nonprod-dev", False),
    ],
)
def test_environment(env, kept):
    assert rules.keep_environment(env) is kept


@pytest.mark.parametrize(
    "header, quote, test, kept",
    [
        (None, None, None, True),
        ("", "", "", True),
        ("x", None, None, False),
        ("false", None, None, False),  # any non-empty testHeader marks test traffic
        (None, "true", None, False),
        (None, "TRUE", None, False),
        (None, None, "True", False),
        (None, "false", "no", True),
        (None, "yes", "1", True),
        (None, " true", None, True),
        (None, '{"a":1}', None, True),
    ],
)
def test_test_traffic(header, quote, test, kept):
    assert rules.is_real_traffic(header, quote, test) is kept


@pytest.mark.parametrize(
    "cc, sc, op, expected",
    [
        ("Search", "Login", "GetQuote", ("Search", "cC")),
        ("", "Login", "GetQuote", ("Login", "ScScenario")),
        (None, "", "GetQuote", ("GetQuote", "OperationName")),
        (None, None, "getquote", None),  # OmsOperation is matched exactly
        (None, None, "NotOms", None),
        (None, None, None, None),
        (None, None, "", None),
        ("S" * 250, None, None, ("S" * 200, "cC")),
    ],
)
def test_scenario_fallback(cc, sc, op, expected):
    assert rules.scenario_id(cc, sc, op, OMS) == expected


@pytest.mark.parametrize(
    "cc, sp, caller, expected",
    [
        ("P1", "P2", "C1", ("P1", "cC")),
        ("", "P2", "C1", ("P2", "ScPartner")),
        (None, None, "C1", ("C1", "CallerName")),
        (None, "", "", ("", "none")),
    ],
)
def test_partner_fallback(cc, sp, caller, expected):
    assert rules.partner_id(cc, sp, caller) == expected


@pytest.mark.parametrize(
    "status, success",
    [
        ("0", True),
        ("4", True),
        ("-1", True),
        ("04", True),
        ("0004", True),
        ("-0", True),
        ("-99999999999999999999", True),
        ("5", False),
        ("6", False),
        ("500", False),
        ("14", False),
        ("99999999999999999999", False),
        ("", False),
        (None, False),
        ("3.0", False),
        ("abc", False),
        (" 3", False),
        ("+3", False),
        ("true", False),
        ("1e0", False),
        ("٣", False),
    ],
)
def test_request_status(status, success):
    assert rules.is_success(status) is success


@pytest.mark.parametrize(
    "text, value",
    [
        ("0", Decimal("0.000")),
        ("0.0", Decimal("0.000")),
        ("12.5", Decimal("12.500")),
        ("1e3", Decimal("1000.000")),
        ("0.0005", Decimal("0.001")),
        ("0.0015", Decimal("0.002")),
        ("2.0004999", Decimal("2.000")),
        ("-0", Decimal("0.000")),
        ("-1", None),
        ("-0.0004", None),
        ("fast", None),
        (None, None),
        ("1e400", None),
        ("NaN", None),
        ("Infinity", None),
        ("007", None),
        (" 5", None),
        ("1_0", None),
        ("true", None),
        ('{"v":1}', None),
        ("1e308", None),
        ("999999999999999.9996", None),
        ("999999999999999.999", Decimal("999999999999999.999")),
    ],
)
def test_latency(text, value):
    assert rules.latency(text) == value


@pytest.mark.parametrize(
    "ok, total, expected",
    [
        (0, 0, None),
        (1, 1, Decimal("100.00")),
        (2, 3, Decimal("66.67")),
        (1, 3, Decimal("33.33")),
        (1, 8, Decimal("12.50")),
        (1, 800, Decimal("0.13")),
        (1, 16, Decimal("6.25")),
        (7, 2000, Decimal("0.35")),
        (1, 400, Decimal("0.25")),
        (1, 1600, Decimal("0.06")),
    ],
)
def test_availability_rounds_half_away_from_zero(ok, total, expected):
    assert rules.availability(ok, total) == expected


@pytest.mark.parametrize(
    "total, count, expected",
    [
        (Decimal("0"), 0, None),
        (None, 3, None),
        (Decimal("10.005"), 1, Decimal("10.01")),
        (Decimal("1"), 3, Decimal("0.33")),
        (Decimal("0.015"), 1, Decimal("0.02")),
    ],
)
def test_average_latency(total, count, expected):
    assert rules.average_latency(total, count) == expected


def _event(**fields):
    base = {"data_baseType": "IncomingServiceRequest", "cc_scenario": "S", "RequestStatus": "0"}
    return base | fields


@pytest.mark.parametrize(
    "event, in_hour, drop",
    [
        (_event(), None, "bad_time"),
        (_event(), False, "outside_hour"),
        (_event(data_baseType="x", cloudEnvironment="dev"), True, "base_type"),  # first rule counts
        (_event(cloudEnvironment="dev", isTest="true"), True, "environment"),
        (_event(isTest="true", cc_scenario=None), True, "test_traffic"),
        (_event(cc_scenario=None), True, "no_scenario"),
        (_event(), True, None),
    ],
)
def test_classify_applies_the_rules_in_order(event, in_hour, drop):
    assert rules.classify(event, in_hour, OMS).drop == drop


def test_classify_kept_event():
    got = rules.classify(_event(ScPartner="P", Latency="7.5", RequestStatus="5"), True, OMS)
    assert got == rules.Classified(None, ("S", "cC"), ("P", "ScPartner"), False, Decimal("7.500"))
