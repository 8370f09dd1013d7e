"""Exports over real SQLite and PostgreSQL warehouses: every row once while rows are written,
tokens (same token same page, tampered 400, foreign 404, another query 400, canceled/expired
410), formats, limits, scopes and the seed's events in order."""

import json
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient

from metrics_pipeline.api import ApiSettings, create_app
from metrics_pipeline.api.exports.service import ExportSettings
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import HOURLY

from .exports_support import (
    EXPORT,
    OBJECT,
    WINDOW,
    Clock,
    export_all,
    keys_of,
    table_keys,
    wait_for,
)
from .helpers import (
    ADMIN_TOKEN,
    LOOPBACK_CLIENT,
    OPS_TOKEN,
    PORTAL_TOKEN,
    START,
    fixed_partial,
    populate,
)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}
PORTAL = {"Authorization": f"Bearer {PORTAL_TOKEN}"}
RANGE = (datetime(2025, 3, 1), datetime(2025, 3, 10))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_url(request, tmp_path):
    """A warehouse of its own (the test writes to it), populated like the shared one."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    else:
        url = request.getfixturevalue("pg_databases").create("mp_exports")
    resource = populate(url)
    yield url
    resource._engines.dispose()


def open_client(url: str, **settings) -> TestClient:
    exports = settings.pop("exports", ExportSettings())
    app = create_app(ApiSettings(warehouse_url=url, exports=exports, **settings))
    return TestClient(app, client=LOOPBACK_CLIENT)


def test_every_row_once_while_rows_are_inserted_and_updated(fresh_url):
    """Pages come from the snapshot of the first call: rows inserted afterwards (before and after
    the cursor) are not served, rows updated in place are served once."""
    expected = table_keys(fresh_url, OBJECT, *RANGE)
    writer = WarehouseResource(url=fresh_url)

    def write_meanwhile():
        hours = [START + timedelta(hours=h) for h in range(0, 100, 7)]
        new = {(b, h): fixed_partial(10, 1) for b in (10, 13) for h in hours}
        # Rows of billers 11 and 12 (both sides of the cursor) change in place.
        changed = {(b, h): fixed_partial(999, 9) for b in (11, 12) for h in hours}
        writer.write_partials(HOURLY, {**new, **changed})

    with open_client(fresh_url) as c:
        rows, task_id = export_all(c, {**WINDOW, "pageSize": 37}, after_first=write_meanwhile)
        served = keys_of(rows)
        assert sorted(served) == expected
        assert len(set(served)) == len(served)
        assert served == sorted(served)  # key order, page after page
        status = c.get(f"/api/v2/exports-status/{task_id}").json()
        assert status["accumulate"] == len(expected)
        assert status["metric"] == (len(expected) % 37 or 37)
        assert status["queue"] == "completed"
        # A new export sees the new rows.
        again, _ = export_all(c, {**WINDOW, "pageSize": 1000})
    assert len(again) == len(expected) + 2 * 15
    writer._engines.dispose()


def test_the_same_token_gives_the_same_page_even_after_the_cache_dropped_it(sqlite_warehouse):
    with open_client(sqlite_warehouse.url) as c:
        params = {**WINDOW, "pageSize": 20}
        first = c.get(EXPORT, params=params).json()
        token2 = first["continuationToken"]
        page2 = c.get(EXPORT, params={**params, "continuationToken": token2})
        again = c.get(EXPORT, params={**params, "continuationToken": token2})
        assert again.content == page2.content  # a lost answer is not a lost page
        token = page2.json()["continuationToken"]
        for _ in range(4):  # pages 3..6: page 2 leaves the cache
            token = c.get(EXPORT, params={**params, "continuationToken": token}).json()[
                "continuationToken"
            ]
        late = c.get(EXPORT, headers={"continuation-token": token2}, params=params)
        assert late.status_code == 200
        assert late.json()["rows"] == page2.json()["rows"]
        task_id = page2.headers["export-task-id"]
        status = c.get(f"/api/v2/exports-status/{task_id}").json()
        assert status["accumulate"] == 6 * 20  # replays are not counted twice
        assert status["metric"] == 20


def test_csv_pages_carry_the_same_rows(sqlite_warehouse):
    with open_client(sqlite_warehouse.url) as c:
        as_json, _ = export_all(c, {**WINDOW, "pageSize": 100})
        params = {**WINDOW, "pageSize": 100, "format": "csv"}
        response = c.get(EXPORT, params=params)
        assert response.headers["content-type"].startswith("text/csv")
        lines = response.text.splitlines()
        token = response.headers["continuation-token"]
        while token:
            response = c.get(EXPORT, params={**params, "continuationToken": token})
            lines.extend(response.text.splitlines()[1:])
            token = response.headers.get("continuation-token")
    header = lines[0].split(",")
    assert header[:3] == ["DataPumpErrorAggregationId", "BillerId", "TimeStampTypeId"]
    assert len(lines) - 1 == len(as_json)
    first = dict(zip(header, lines[1].split(","), strict=True))
    assert first["StartTime"] == as_json[0]["StartTime"]
    assert Decimal(first["ErrorRate"]) == Decimal(str(as_json[0]["ErrorRate"]))


def test_tokens_are_bound_to_the_signature_the_caller_and_the_query(sqlite_warehouse, tokens_file):
    with open_client(sqlite_warehouse.url, tokens_file=str(tokens_file)) as c:
        params = {**WINDOW, "pageSize": 10, "billers": "11"}
        first = c.get(EXPORT, params=params, headers=PORTAL)
        assert first.status_code == 200, first.text
        token = first.json()["continuationToken"]
        body, dot, mac = token.partition(".")
        tampered = [
            token[:-2] + ("AA" if token[-2:] != "AA" else "BB"),
            body[:-3] + "xyz" + dot + mac,
            "x" + token,
            "not-a-token",
            body,
        ]
        for bad in tampered:
            r = c.get(EXPORT, params={**params, "continuationToken": bad}, headers=PORTAL)
            assert r.status_code == 400, (bad, r.text)
            assert r.json()["parameter"] == "continuationToken"
        # Another caller (even one that may read every biller) does not know this task.
        r = c.get(EXPORT, params={**params, "continuationToken": token}, headers=ADMIN)
        assert r.status_code == 404
        assert "no export task of this caller" in r.json()["detail"]
        # The same caller with another query.
        r = c.get(
            EXPORT, params={**params, "pageSize": 11, "continuationToken": token}, headers=PORTAL
        )
        assert r.status_code == 400
        assert "another query" in r.json()["detail"]
        ok = c.get(EXPORT, params={**params, "continuationToken": token}, headers=PORTAL)
        assert ok.status_code == 200
        assert {row["BillerId"] for row in ok.json()["rows"]} == {11}


def test_scopes_and_bad_input(sqlite_warehouse, tokens_file):
    with open_client(sqlite_warehouse.url, tokens_file=str(tokens_file)) as c:
        cases = [
            ({"billers": "12"}, PORTAL, 403, "billers"),
            ({"billers": "11,x"}, PORTAL, 400, "billers"),
            ({"pageSize": "10001"}, ADMIN, 422, "pageSize"),
            ({"pageSize": "0"}, ADMIN, 422, "pageSize"),
            ({"format": "xml"}, ADMIN, 422, "format"),
            ({"fromDate": "2025-03-10"}, ADMIN, 400, "fromDate"),
            ({"toDate": "0001-01-01T00:00+05:00"}, ADMIN, 400, "toDate"),
            ({"fromDate": "yesterday"}, ADMIN, 400, "fromDate"),
        ]
        for changes, who, status, parameter in cases:
            r = c.get(EXPORT, params={**WINDOW, **changes}, headers=who)
            assert r.status_code == status, (changes, r.text)
            assert r.json()["parameter"] == parameter
        r = c.get("/api/v2/exports/Nope", params=WINDOW, headers=ADMIN)
        assert r.status_code == 404 and "DataPumpErrorAggregation" in r.json()["detail"]
        # A portal token exports only its billers, without naming them.
        rows, _ = export_all(c, {**WINDOW, "pageSize": 500}, headers=PORTAL)
        assert {r["BillerId"] for r in rows} == {11}


def test_events_in_order_fetch_ahead_bounded_and_cancel(sqlite_warehouse):
    settings = ExportSettings(pages_ahead=2)
    with open_client(sqlite_warehouse.url, exports=settings) as c:
        first = c.get(EXPORT, params={**WINDOW, "pageSize": 10})
        task_id = first.headers["export-task-id"]
        url = f"/api/v2/exports-status/{task_id}"
        status = wait_for(
            lambda: (s := c.get(url).json())["status"] == "MAX-REQUESTED-PAGE-REACHED" and s,
            "fetch-ahead to stop at its bound",
        )
        assert [e["event"] for e in status["events"]] == [
            "ADDED-TO-QUEUE",
            "META-DATA-SCANNED",
            "SCANNING-PAGE-(1)",
            "COMMITING-PAGE-(1)",
            "SCANNING-PAGE-(2)",
            "COMMITING-PAGE-(2)",
            "SCANNING-PAGE-(3)",
            "COMMITING-PAGE-(3)",
            "MAX-REQUESTED-PAGE-REACHED",
        ]
        assert status["pages_fetched"] == 3 and status["pages_served"] == 1
        assert status["cached_bytes"] > 0
        cancel = c.delete(url)
        assert cancel.status_code == 200
        assert cancel.json()["status"] == "CANCELED"
        assert cancel.json()["cached_bytes"] == 0
        assert c.delete(url).json()["status"] == "CANCELED"  # harmless again
        token = first.json()["continuationToken"]
        r = c.get(EXPORT, params={**WINDOW, "pageSize": 10, "continuationToken": token})
        assert r.status_code == 410 and "canceled" in r.json()["detail"]
        after = c.get(url).json()
        assert after["pages_fetched"] == 3  # nothing fetched after the cancel
        assert after["queue"] == "draining"


def test_an_empty_window_says_no_record_found(sqlite_warehouse):
    with open_client(sqlite_warehouse.url) as c:
        r = c.get(EXPORT, params={"fromDate": "2030-01-01", "toDate": "2030-02-01"})
        assert r.status_code == 200
        assert r.json()["rows"] == [] and r.json()["continuationToken"] is None
        assert "continuation-token" not in r.headers
        status = c.get(f"/api/v2/exports-status/{r.headers['export-task-id']}").json()
    assert [e["event"] for e in status["events"]][-4:] == [
        "COMMITING-PAGE-(1)",
        "NO-RECORD-FOUND",
        "END-OF-QUERY_REACHED",
        "COMPLETED",
    ]
    assert status["queue"] == "completed" and status["accumulate"] == 0


def test_caps_answer_429_with_a_code(sqlite_warehouse):
    with open_client(sqlite_warehouse.url, exports=ExportSettings(max_tasks=2)) as c:
        for _ in range(2):
            assert c.get(EXPORT, params={**WINDOW, "pageSize": 5}).status_code == 200
        r = c.get(EXPORT, params={**WINDOW, "pageSize": 5})
        assert r.status_code == 429
        assert r.json()["code"] == "EXPORT_TASKS_LIMIT" and "Retry-After" in r.headers
    with open_client(sqlite_warehouse.url, exports=ExportSettings(max_cache_bytes=1000)) as c:
        assert c.get(EXPORT, params={**WINDOW, "pageSize": 50}).status_code == 200
        r = c.get(EXPORT, params={**WINDOW, "pageSize": 50})
        assert r.status_code == 429 and r.json()["code"] == "EXPORT_CACHE_FULL"
        assert "cache is full" in r.json()["detail"]


def test_a_task_is_its_callers_only_all_billers_tokens_included(sqlite_warehouse, tokens_file):
    """Only the caller that started an export sees, reads or cancels it; for every other caller,
    another all-billers token included, it is 404 and goes on."""
    with open_client(sqlite_warehouse.url, tokens_file=str(tokens_file)) as c:
        portals = c.get(EXPORT, params={**WINDOW, "pageSize": 5}, headers=PORTAL)
        admins = c.get(EXPORT, params={**WINDOW, "pageSize": 5}, headers=ADMIN)
        tasks = {PORTAL_TOKEN: portals.headers["export-task-id"]}
        tasks[ADMIN_TOKEN] = admins.headers["export-task-id"]

        def ids(headers):
            queues = c.get("/api/v2/exports-status", headers=headers).json()
            assert set(queues) == {"active", "completed", "draining", "stale"}
            return {t["task_id"] for q in queues.values() for t in q}

        assert ids(PORTAL) == {tasks[PORTAL_TOKEN]}
        assert ids(ADMIN) == {tasks[ADMIN_TOKEN]}
        assert ids(OPS) == set()
        for owner, task_id in tasks.items():
            for other in {PORTAL_TOKEN, ADMIN_TOKEN, OPS_TOKEN} - {owner}:
                headers = {"Authorization": f"Bearer {other}"}
                for method in (c.get, c.delete):
                    r = method(f"/api/v2/exports-status/{task_id}", headers=headers)
                    assert r.status_code == 404, (owner, other, method, r.text)
                    assert r.json()["parameter"] == "task_id"
        # Nobody else's DELETE canceled anything: both exports go on, for their owners only.
        for owner, first in ((PORTAL_TOKEN, portals), (ADMIN_TOKEN, admins)):
            headers = {"Authorization": f"Bearer {owner}"}
            status = c.get(f"/api/v2/exports-status/{tasks[owner]}", headers=headers).json()
            assert status["status"] != "CANCELED" and status["message"] is None
            token = {"continuationToken": first.headers["continuation-token"]}
            params = {**WINDOW, "pageSize": 5, **token}
            assert c.get(EXPORT, params=params, headers=headers).status_code == 200
            assert c.get(EXPORT, params=params, headers=OPS).status_code == 404
        # The owner cancels its own task.
        r = c.delete(f"/api/v2/exports-status/{tasks[ADMIN_TOKEN]}", headers=ADMIN)
        assert r.status_code == 200 and r.json()["status"] == "CANCELED"


def test_status_fields_follow_the_seed(sqlite_warehouse):
    clock = Clock()
    settings = ApiSettings(
        warehouse_url=sqlite_warehouse.url, exports=ExportSettings(pages_ahead=0)
    )
    with TestClient(create_app(settings, clock=clock), client=LOOPBACK_CLIENT) as c:
        r = c.get(EXPORT, params={**WINDOW, "pageSize": 7, "billers": "12"})
        url = f"/api/v2/exports-status/{r.headers['export-task-id']}"
        wait_for(lambda: c.get(url).json()["status"] == "MAX-REQUESTED-PAGE-REACHED", "idle")
        clock.advance(4.25)
        task = c.get("/api/v2/exports-status").json()["active"][0]
    assert task["task_id"] == r.headers["export-task-id"]
    assert task["accumulate"] == 7 and task["metric"] == 7
    assert task["activity_tracker"]["elapsed_time"] == "0:00:04.250000"
    assert task["activity_tracker"]["initiated_time"] == "2025-11-24 16:00:00.000000"
    assert task["query_config"] == {
        "filter_params": {
            "fromDate": "2025-03-01T00:00:00Z",
            "toDate": "2025-03-10T00:00:00Z",
            "billers": [12],
            "pageSize": 7,
            "format": "json",
        },
        "object_name": OBJECT,
    }
    assert json.dumps(task)  # plain JSON


def test_fetch_ahead_stops_at_the_bytes_per_task(sqlite_warehouse):
    settings = ExportSettings(pages_ahead=100, bytes_per_task=3000)
    with open_client(sqlite_warehouse.url, exports=settings) as c:
        first = c.get(EXPORT, params={**WINDOW, "pageSize": 10})  # ~1.1 KB per page
        url = f"/api/v2/exports-status/{first.headers['export-task-id']}"
        status = wait_for(
            lambda: (s := c.get(url).json())["status"] == "MAX-REQUESTED-PAGE-REACHED" and s,
            "fetch-ahead to stop at the byte bound",
        )
        assert status["cached_bytes"] >= 3000
        assert status["pages_fetched"] < 10  # far fewer than the 100 pages it may go ahead
        # Reading on frees the old pages and lets it fetch further.
        token = first.json()["continuationToken"]
        for _ in range(3):
            token = c.get(EXPORT, params={**WINDOW, "pageSize": 10, "continuationToken": token})
            token = token.json()["continuationToken"]
        later = wait_for(
            lambda: (s := c.get(url).json())["pages_fetched"] > status["pages_fetched"] and s,
            "fetch-ahead to resume",
        )
        assert later["pages_served"] == 4
