"""Bad input gets a 4xx whose message names the parameter at fault, and never reaches SQL text."""

import pytest
from sqlalchemy import create_engine, text

from metrics_pipeline.api.paging import Cursor

GOOD = {"metricTypeId": "1", "timeStampTypeId": "1", "from": "2025-03-01", "to": "2025-03-02"}


def other_query_token() -> str:
    from datetime import datetime

    return Cursor(
        12, 1, 1, datetime(2025, 3, 1), datetime(2025, 3, 2), datetime(2025, 3, 1, 5)
    ).encode()


CASES = [
    # (path, changes to GOOD (None removes), status, parameter, words in the message)
    ("/api/metrics/abc", {}, 422, "billerId", ["integer"]),
    ("/api/metrics/0", {}, 422, "billerId", ["greater than or equal to 1"]),
    ("/api/metrics/99999999999", {}, 422, "billerId", ["less than or equal"]),
    ("/api/metrics/1%20OR%201=1", {}, 422, "billerId", ["integer"]),
    ("/api/metrics/11", {"metricTypeId": None}, 422, "metricTypeId", ["required"]),
    ("/api/metrics/11", {"metricTypeId": "x"}, 422, "metricTypeId", ["integer"]),
    ("/api/metrics/11", {"metricTypeId": "9"}, 400, "metricTypeId", ["unknown metric type 9"]),
    ("/api/metrics/11", {"metricTypeId": "0"}, 400, "metricTypeId", ["unknown metric type 0"]),
    ("/api/metrics/11", {"timeStampTypeId": None}, 422, "timeStampTypeId", ["required"]),
    ("/api/metrics/11", {"timeStampTypeId": "4"}, 400, "timeStampTypeId", ["unknown timestamp"]),
    ("/api/metrics/11", {"from": "yesterday"}, 400, "from", ["ISO 8601", "yesterday"]),
    ("/api/metrics/11", {"to": "2025-13-01"}, 400, "to", ["ISO 8601"]),
    ("/api/metrics/11", {"from": "2025-03-01' OR '1'='1"}, 400, "from", ["ISO 8601"]),
    ("/api/metrics/11", {"from": "2025-03-03", "to": "2025-03-02"}, 400, "from", ["after"]),
    ("/api/metrics/11", {"from": "x" * 65}, 422, "from", ["at most 64"]),
    ("/api/metrics/11", {"limit": "0"}, 422, "limit", ["greater than or equal to 1"]),
    ("/api/metrics/11", {"limit": "1001"}, 422, "limit", ["less than or equal to 1000"]),
    # Dates Python can parse but not shift or represent (once 500 OverflowError): 400 instead.
    ("/api/metrics/11", {"from": None, "to": "0001-01-01"}, 400, "to", ["out of range"]),
    ("/api/metrics/11", {"from": "9999-12-31T23:00-05:00"}, 400, "from", ["out of range"]),
    (
        "/api/metrics/11",
        {"from": "0001-01-01", "to": "0001-01-01T00:00+05:00"},
        400,
        "to",
        ["out of range"],
    ),
    ("/api/metrics/11", {"to": "9999-12-31T23:59"}, 400, "to", ["out of range", "9999-12-31"]),
    ("/api/metrics/11", {"continuationToken": "not-a-token"}, 400, "continuationToken", ["not a"]),
    ("/api/metrics/11", {"continuationToken": "eyJ2IjoxfQ"}, 400, "continuationToken", ["not a"]),
]


@pytest.mark.parametrize(("path", "changes", "status", "parameter", "words"), CASES)
def test_bad_input_is_4xx_naming_the_parameter(client, path, changes, status, parameter, words):
    params = {k: v for k, v in {**GOOD, **changes}.items() if v is not None}
    response = client.get(path, params=params)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["parameter"] == parameter
    assert body["detail"].startswith(f"{parameter}: ")
    for word in words:
        assert word in body["detail"]


def test_a_token_of_another_query_is_refused(client):
    response = client.get(
        "/api/metrics/11", params={**GOOD, "continuationToken": other_query_token()}
    )
    assert response.status_code == 400
    assert response.json()["parameter"] == "continuationToken"
    assert "another query" in response.json()["detail"]


def test_hostile_input_leaves_the_warehouse_intact(client, warehouse):
    for value in ('1; DROP TABLE "DataPumpErrorAggregation"--', "2025-03-01'); DELETE FROM x;--"):
        assert client.get("/api/metrics/11", params={**GOOD, "from": value}).status_code == 400
        assert client.get(f"/api/metrics/{value}", params=GOOD).status_code in (404, 422)
    engine = create_engine(warehouse.url)
    with engine.connect() as conn:
        n = conn.execute(text('SELECT COUNT(*) FROM "DataPumpErrorAggregation"')).scalar()
    engine.dispose()
    assert n > 0


def test_the_specs_time_patterns_are_what_the_api_reads():
    """The OpenAPI patterns of dates and times (which schemathesis generates from) accept every
    real day of 1754-9998 and no other, and each time they accept parses within the range."""
    import re
    from datetime import date, timedelta

    from metrics_pipeline.api.times import DATE_PATTERN, TIME_PATTERN, parse_time

    day_pattern, time_pattern = re.compile(DATE_PATTERN), re.compile(TIME_PATTERN)
    day = date(1754, 1, 1)
    while day <= date(9998, 12, 31):
        assert day_pattern.match(day.isoformat()), day
        day += timedelta(days=1)
    for year in (1754, 1800, 1900, 2000, 2024, 2025, 2100, 2400, 9996, 9998):
        for month in range(1, 14):
            for d in range(0, 33):
                text = f"{year:04d}-{month:02d}-{d:02d}"
                try:
                    real = date.fromisoformat(text) is not None
                except ValueError:
                    real = False
                assert bool(day_pattern.match(text)) == real, text
    for text in (
        "2025-03-01T10:00Z",
        "2025-03-01 10:00:59.123456+05:30",
        "1754-01-01T00:00+23:59",
        "9998-12-31T23:59:59.999999-23:59",
    ):
        assert time_pattern.match(text) and parse_time(text, "t")
    for text in ("2025-03-01T24:00", "2025-03-01Z", "1753-06-01", "9999-01-01", "2025-3-1"):
        assert not time_pattern.match(text), text
