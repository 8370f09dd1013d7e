"""Seed 001's rules for one request-telemetry event, as pure functions (no DuckDB, no SQL).

Every field arrives as text: a JSON string as its value, any other JSON scalar as its literal text
(``3``, ``3.0``, ``true``), an object as its JSON text, and a missing field or ``null`` as None.
Parquet columns are cast to text the same way. The DuckDB statement in ``duckdb_sql`` is built
from the constants below, and both are tested against an independent reference.
"""

import math
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

BASE_TYPES = ("ms.qos.incomingservicerequest", "incomingservicerequest")
#: cloudEnvironment values (lower case) that are not production.
NON_PROD_EXACT = ("dev", "int", "ppe", "non-prod", "nonprod", "sandbox", "perf", "test")
#: Parts that mark a non-production environment wherever they appear.
NON_PROD_PARTS = ("-dev", "-int", "-ppe", "-sandbox", "-perf", "-test")
#: Parts that rule out the "contains prod" escape.
NON_PROD_PROD = ("non-prod", "nonprod")

#: An integer below 5: any negative integer, or zeros followed by one digit 0-4.
SUCCESS_STATUS = r"-[0-9]+|0*[0-4]"
#: A JSON number (no spaces, no underscores, no NaN or Infinity).
JSON_NUMBER = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"
#: Latency is summed exactly at this many decimals (rounded half away from zero).
LATENCY_DECIMALS = 3
#: Valid latencies are below this bound (the DECIMAL(18, 3) they are summed in).
LATENCY_LIMIT = Decimal(10) ** 15

#: Lengths of the key columns; longer values are cut (the warehouse's unique key has a size limit).
KEY_LENGTHS = {
    "ScenarioId": 200,
    "PartnerId": 200,
    "RequestType": 100,
    "Environment": 100,
    "STID": 100,
}

CC_SCENARIO = "ms.b.tel.scenario"
CC_PARTNER = "ms.b.tel.partner"

#: Which field supplied ScenarioId / PartnerId (levels of the fallback).
SCENARIO_LEVELS = ("cC", "ScScenario", "OperationName")
PARTNER_LEVELS = ("cC", "ScPartner", "CallerName", "none")

#: Why an event was left out, in the order the rules are applied (first failing rule counts).
DROP_REASONS = (
    "bad_time",
    "outside_hour",
    "base_type",
    "environment",
    "test_traffic",
    "no_scenario",
)

_SUCCESS = re.compile(SUCCESS_STATUS)
_NUMBER = re.compile(JSON_NUMBER)
_MILLI = Decimal(1).scaleb(-LATENCY_DECIMALS)


def empty(value: str | None) -> bool:
    """.NET's string.IsNullOrEmpty."""
    return value is None or value == ""


def is_service_request(base_type: str | None) -> bool:
    return not empty(base_type) and base_type.lower() in BASE_TYPES


def keep_environment(env: str | None) -> bool:
    """The seed's expression: empty; or no non-prod name or part; or 'prod' without
    'non-prod'/'nonprod'. As the issue reads it ('prod-test' is kept and 'nonprod-eu' is not),
    an environment naming itself non-prod is never kept by the second branch either."""
    if empty(env):
        return True
    low = env.lower()
    if (
        low not in NON_PROD_EXACT
        and not any(p in low for p in NON_PROD_PARTS)
        and not any(p in low for p in NON_PROD_PROD)
    ):
        return True
    return "prod" in low and not any(p in low for p in NON_PROD_PROD)


def _not_true(value: str | None) -> bool:
    return empty(value) or value.lower() != "true"


def is_real_traffic(
    test_header: str | None, quote_is_test: str | None, is_test: str | None
) -> bool:
    return empty(test_header) and _not_true(quote_is_test) and _not_true(is_test)


def first_present(*values: str | None) -> tuple[int, str] | None:
    """(index, value) of the first non-empty value."""
    for i, value in enumerate(values):
        if not empty(value):
            return i, value
    return None


def scenario_id(
    cc_scenario: str | None,
    sc_scenario: str | None,
    operation_name: str | None,
    oms_operations: frozenset[str] | set[str],
) -> tuple[str, str] | None:
    """(ScenarioId, level) or None when no level supplies one."""
    operation = operation_name if operation_name in oms_operations else None
    found = first_present(cc_scenario, sc_scenario, operation)
    if found is None:
        return None
    return cut("ScenarioId", found[1]), SCENARIO_LEVELS[found[0]]


def partner_id(
    cc_partner: str | None, sc_partner: str | None, caller_name: str | None
) -> tuple[str, str]:
    """(PartnerId, level); an event without any keeps PartnerId '' (level 'none')."""
    found = first_present(cc_partner, sc_partner, caller_name)
    if found is None:
        return "", "none"
    return cut("PartnerId", found[1]), PARTNER_LEVELS[found[0]]


def cut(column: str, value: str | None) -> str:
    """A key column's value: '' for absent, cut to the column's length."""
    return "" if value is None else value[: KEY_LENGTHS[column]]


def is_success(status: str | None) -> bool:
    """RequestStatus: an integer below 5 is a success; anything else (5 or more, empty, not an
    integer) a failure."""
    return status is not None and _SUCCESS.fullmatch(status) is not None


def latency(value: str | None) -> Decimal | None:
    """A valid latency (a finite JSON number >= 0), rounded to LATENCY_DECIMALS; else None."""
    if value is None or _NUMBER.fullmatch(value) is None:
        return None
    number = float(value)
    if not math.isfinite(number) or number < 0:
        return None
    try:
        rounded = Decimal(value).quantize(_MILLI, rounding=ROUND_HALF_UP)
    except InvalidOperation:
        return None
    return rounded if rounded < LATENCY_LIMIT else None


def availability(successful: int, total: int) -> Decimal | None:
    """100 x successful / total, 2 decimals rounded half away from zero; None when total is 0."""
    if not total:
        return None
    return (Decimal(100 * successful) / Decimal(total)).quantize(Decimal("0.01"), ROUND_HALF_UP)


def average_latency(total: Decimal | None, count: int) -> Decimal | None:
    if not count or total is None:
        return None
    return (Decimal(total) / Decimal(count)).quantize(Decimal("0.01"), ROUND_HALF_UP)


@dataclass(frozen=True)
class Classified:
    """What the rules make of one event: why it was dropped, or its key and measures."""

    drop: str | None
    scenario: tuple[str, str] | None = None
    partner: tuple[str, str] | None = None
    success: bool = False
    latency: Decimal | None = None


def classify(event: dict, in_hour: bool | None, oms_operations: frozenset[str]) -> Classified:
    """Apply the rules in order to one event whose fields are text (see the module docstring).
    ``in_hour`` is None when ``time`` could not be read, else whether it lies in the folder's hour.
    """
    if in_hour is None:
        return Classified("bad_time")
    if not in_hour:
        return Classified("outside_hour")
    if not is_service_request(event.get("data_baseType")):
        return Classified("base_type")
    if not keep_environment(event.get("cloudEnvironment")):
        return Classified("environment")
    if not is_real_traffic(event.get("testHeader"), event.get("quoteIsTest"), event.get("isTest")):
        return Classified("test_traffic")
    scenario = scenario_id(
        event.get("cc_scenario"),
        event.get("ScScenario"),
        event.get("OperationName"),
        oms_operations,
    )
    if scenario is None:
        return Classified("no_scenario")
    return Classified(
        None,
        scenario,
        partner_id(event.get("cc_partner"), event.get("ScPartner"), event.get("CallerName")),
        is_success(event.get("RequestStatus")),
        latency(event.get("Latency")),
    )
