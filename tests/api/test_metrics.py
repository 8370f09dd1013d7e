"""GET /api/metrics, /api/billers, reference data and health, on SQLite and PostgreSQL."""

from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from metrics_pipeline.api import ApiSettings, create_app
from metrics_pipeline.semantics import METRIC_TYPES, TIMESTAMP_TYPES

from .helpers import BILLERS, HOURS, LOOPBACK_CLIENT, START, decoded, expected_points

RANGE = {"from": "2025-02-01T00:00:00Z", "to": "2025-04-01T00:00:00Z"}
FAR = (datetime(2025, 2, 1), datetime(2025, 4, 1))


def get_all(client, biller, metric, level, **params) -> list[dict]:
    """Every page of a series, following continuation tokens."""
    points, token = [], None
    for _ in range(100):
        query = {"metricTypeId": metric, "timeStampTypeId": level, **RANGE, **params}
        if token:
            query["continuationToken"] = token
        response = client.get(f"/api/metrics/{biller}", params=query)
        assert response.status_code == 200, response.text
        body = decoded(response)
        points += body["points"]
        token = body["continuationToken"]
        if token is None:
            return points
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("metric", [m.id for m in METRIC_TYPES])
def test_points_equal_the_warehouse_rows(client, warehouse, metric):
    for biller in BILLERS:
        for level in (1, 2, 3):
            got = get_all(client, biller, metric, level)
            want = expected_points(warehouse.url, biller, metric, level, *FAR)
            assert got == want, (biller, metric, level)
            assert got, "every level has rows"


def test_points_say_how_much_they_know(client):
    """A partial day is served as partial; an hour whose latest read failed is a gap."""
    day = get_all(client, 11, 4, 2)
    partial = {p["t"]: p for p in day}["2025-03-02T00:00:00Z"]
    assert (partial["coveredHours"], partial["expectedHours"], partial["complete"]) == (
        20,
        24,
        False,
    )
    assert all(p["complete"] for p in day if p["t"] != "2025-03-02T00:00:00Z")
    hours = {p["t"] for p in get_all(client, 12, 4, 1)}
    assert "2025-03-01T09:00:00Z" not in hours and "2025-03-01T08:00:00Z" in hours
    [week] = [p for p in get_all(client, 12, 4, 3) if p["t"] == "2025-03-02T00:00:00Z"]
    assert (week["coveredHours"], week["expectedHours"], week["complete"]) == (164, 168, False)


def test_response_shape_and_metadata(client):
    response = client.get(
        "/api/metrics/11", params={"metricTypeId": 8, "timeStampTypeId": 1, **RANGE}
    )
    body = decoded(response)
    assert response.headers["content-type"] == "application/json"
    assert body["billerId"] == 11
    assert body["metricType"] == {"id": 8, "name": "Availability", "unit": "Percentage"}
    assert body["timeStampType"] == {"id": 1, "name": "Hourly"}
    assert body["from"] == "2025-02-01T00:00:00Z" and body["to"] == "2025-04-01T00:00:00Z"
    by_time = {p["t"]: p for p in body["points"]}
    assert by_time["2025-03-01T05:00:00Z"] == {
        "t": "2025-03-01T05:00:00Z",
        "value": None,
        "requestCount": 0,
        "coveredHours": 1,
        "expectedHours": 1,
        "complete": True,
    }
    # Half away from zero, not to even: 90.625 -> 90.63.
    assert str(by_time["2025-03-01T06:00:00Z"]["value"]) == "90.63"
    assert str(by_time["2025-03-01T07:00:00Z"]["value"]) == "96.88"
    assert str(by_time["2025-03-01T08:00:00Z"]["value"]) == "66.67"
    times = [p["t"] for p in body["points"]]
    assert times == sorted(times) and len(times) == HOURS


def test_paging_walks_the_whole_series_without_gaps_or_repeats(client, warehouse):
    paged = get_all(client, 12, 1, 1, limit=7)
    assert paged == expected_points(warehouse.url, 12, 1, 1, *FAR)
    first = client.get(
        "/api/metrics/12", params={"metricTypeId": 1, "timeStampTypeId": 1, "limit": 7, **RANGE}
    ).json()
    assert len(first["points"]) == 7 and first["continuationToken"]
    # Biller 12's hour 09:00 is a gap (its latest read failed): one point fewer than hours.
    exact = client.get(
        "/api/metrics/12",
        params={"metricTypeId": 1, "timeStampTypeId": 1, "limit": HOURS - 1, **RANGE},
    ).json()
    assert len(exact["points"]) == HOURS - 1 and exact["continuationToken"] is None


def test_paging_with_default_range_keeps_the_first_pages_range(client):
    # No `from`/`to`: the token carries the range resolved on the first page.
    query = {"metricTypeId": 4, "timeStampTypeId": 1, "to": "2025-03-03T00:00:00"}
    first = client.get("/api/metrics/11", params={**query, "limit": 10}).json()
    assert first["from"] == "2025-03-01T00:00:00Z"  # to - 2 days
    second = client.get(
        "/api/metrics/11",
        params={
            "metricTypeId": 4,
            "timeStampTypeId": 1,
            "limit": 10,
            "continuationToken": first["continuationToken"],
        },
    ).json()
    assert second["from"] == first["from"] and second["to"] == first["to"]
    assert second["points"][0]["t"] == "2025-03-01T10:00:00Z"


def test_range_is_start_inclusive_end_exclusive_and_offsets_are_utc(client):
    def times(**params):
        response = client.get(
            "/api/metrics/11", params={"metricTypeId": 4, "timeStampTypeId": 1, **params}
        )
        assert response.status_code == 200, response.text
        return [p["t"] for p in response.json()["points"]]

    assert times(**{"from": "2025-03-01T10:00:00", "to": "2025-03-01T13:00:00"}) == [
        "2025-03-01T10:00:00Z",
        "2025-03-01T11:00:00Z",
        "2025-03-01T12:00:00Z",
    ]
    # 12:00+02:00 is 10:00 UTC; a bare date is midnight UTC.
    assert times(**{"from": "2025-03-01T12:00:00+02:00", "to": "2025-03-01T11:30:00Z"}) == [
        "2025-03-01T10:00:00Z",
        "2025-03-01T11:00:00Z",
    ]
    assert times(**{"from": "2025-03-05T22:00:00", "to": "2025-03-07"}) == [
        "2025-03-05T22:00:00Z",
        "2025-03-05T23:00:00Z",
    ]
    assert times(**{"from": "2025-03-01T10:00:00", "to": "2025-03-01T10:00:00"}) == []


def test_known_biller_with_no_rows_in_range_is_empty_not_404(client):
    # The default range ends now: years after the test data.
    response = client.get("/api/metrics/11", params={"metricTypeId": 1, "timeStampTypeId": 3})
    assert response.status_code == 200
    assert response.json()["points"] == []


def test_unknown_biller_is_404(client):
    response = client.get(
        "/api/metrics/999", params={"metricTypeId": 1, "timeStampTypeId": 1, **RANGE}
    )
    assert response.status_code == 404
    assert response.json()["parameter"] == "billerId"
    assert "999" in response.json()["detail"]


def test_billers_and_reference_data(client):
    assert client.get("/api/billers").json() == {"billers": list(BILLERS), "names": {}}
    assert client.get("/api/metric-types").json() == [
        {"id": m.id, "name": m.name, "unit": m.unit, "description": m.description}
        for m in METRIC_TYPES
    ]
    assert client.get("/api/timestamp-types").json() == [
        {"id": t.id, "name": t.name, "hierarchyLevel": t.hierarchy_level} for t in TIMESTAMP_TYPES
    ]


def test_health_ok(client):
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "warehouse": "ok", "cache": "disabled"}


def test_health_503_and_metrics_503_when_the_warehouse_does_not_answer():
    from .helpers import free_port

    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere"
    with TestClient(create_app(ApiSettings(warehouse_url=url)), client=LOOPBACK_CLIENT) as c:
        health = c.get("/api/health")
        assert health.status_code == 503
        assert health.json()["warehouse"] == "unavailable"
        response = c.get("/api/metrics/11", params={"metricTypeId": 1, "timeStampTypeId": 1})
        assert response.status_code == 503
        assert "warehouse" in response.json()["detail"]
        assert "127.0.0.1" not in response.text  # no connection details leak


def test_openapi_spec_is_published(client):
    spec = client.get("/openapi.json").json()
    assert {
        "/api/health",
        "/api/metrics/{billerId}",
        "/api/metric-types",
        "/api/timestamp-types",
        "/api/billers",
    } <= set(spec["paths"])
    op = spec["paths"]["/api/metrics/{billerId}"]["get"]
    names = {p["name"] for p in op["parameters"]}
    assert {
        "billerId",
        "metricTypeId",
        "timeStampTypeId",
        "from",
        "to",
        "limit",
        "continuationToken",
    } <= names
    assert {"200", "400", "401", "403", "404", "422"} <= set(op["responses"])
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_point_times_are_hours_of_the_data(client):
    points = client.get(
        "/api/metrics/11", params={"metricTypeId": 4, "timeStampTypeId": 1, **RANGE}
    ).json()["points"]
    assert points[0]["t"] == START.isoformat() + "Z"
    assert points[-1]["t"] == (START + timedelta(hours=HOURS - 1)).isoformat() + "Z"
