"""Seed 003's activity monitoring, as a client written from the seed's text uses it: the
``task_id`` it holds is the continuation token returned with the first page; it lists, reads and
cancels the task at ``/api/integrations/v2/biviews-status[/<task_id>]`` and reads the seed's
fields (``initated_time`` sic) and time format (``2019-05-02 10:39:36.560855``)."""

import re

from fastapi.testclient import TestClient

from metrics_pipeline.api import ApiSettings, create_app
from metrics_pipeline.api.exports.biviews import seed_date
from metrics_pipeline.api.exports.service import ExportSettings

from .exports_support import EXPORT, OBJECT, WINDOW, Clock, wait_for
from .helpers import ADMIN_TOKEN, LOOPBACK_CLIENT, OPS_TOKEN

STATUS = "/api/integrations/v2/biviews-status"
QUEUES = {"active", "completed", "draining", "stale"}
SEED_FIELDS = {
    "accumulate",
    "activity_tracker",
    "message",
    "metric",
    "query_config",
    "status",
    "task_id",
}
SEED_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$")
ELAPSED = re.compile(r"^\d+:\d{2}:\d{2}(\.\d{6})?$")


def client(url: str, clock=None, **settings) -> TestClient:
    settings = ApiSettings(warehouse_url=url, **settings)
    app = create_app(settings, clock=clock) if clock else create_app(settings)
    return TestClient(app, client=LOOPBACK_CLIENT)


def every_task(queues: dict) -> dict[str, tuple[str, dict]]:
    assert set(queues) == QUEUES
    return {t["task_id"]: (q, t) for q, items in queues.items() for t in items}


def test_a_task_listed_read_and_canceled_by_its_continuation_token(sqlite_warehouse):
    clock = Clock()
    settings = {"exports": ExportSettings(pages_ahead=0)}
    with client(sqlite_warehouse.url, clock, **settings) as c:
        first = c.get(EXPORT, params={**WINDOW, "pageSize": 10})
        token = first.json()["continuationToken"]
        assert token
        wait_for(
            lambda: c.get(f"{STATUS}/{token}").json()["status"] == "MAX-REQUESTED-PAGE-REACHED",
            "the first page to settle",
        )
        clock.advance(4.259198)
        tasks = every_task(c.get(STATUS).json())
        assert list(tasks) == [token]
        queue, task = tasks[token]
        assert queue == "active"
        assert set(task) == SEED_FIELDS
        assert task["accumulate"] == 10 and task["metric"] == 10
        tracker = task["activity_tracker"]
        assert set(tracker) == {"elapsed_time", "initated_time", "last_activity"}
        assert tracker["initated_time"] == "2025-11-24 16:00:00.000000"
        assert SEED_TIME.match(tracker["last_activity"])
        assert tracker["elapsed_time"] == "0:00:04.259198"
        assert task["query_config"] == {
            "filter_params": {"fromDate": "2025-03-01 00:00:00", "toDate": "2025-03-10 00:00:00"},
            "object_name": OBJECT,
        }
        # The same task by its token and by our task id; our own view of it is unchanged.
        by_token = c.get(f"{STATUS}/{token}").json()
        by_id = c.get(f"{STATUS}/{first.headers['export-task-id']}").json()
        assert by_token == by_id and by_token["task_id"] == token
        assert [e["event"] for e in by_token["events"]][:2] == [
            "ADDED-TO-QUEUE",
            "META-DATA-SCANNED",
        ]
        ours = c.get(f"/api/v2/exports-status/{first.headers['export-task-id']}").json()
        assert ours["task_id"] == first.headers["export-task-id"]
        assert ours["activity_tracker"]["initiated_time"] == tracker["initated_time"]
        # Cancel by the token: the task drains, its pages are refused.
        canceled = c.delete(f"{STATUS}/{token}")
        assert canceled.status_code == 200 and canceled.json()["status"] == "CANCELED"
        assert c.delete(f"{STATUS}/{token}").json()["status"] == "CANCELED"
        assert every_task(c.get(STATUS).json())[token][0] == "draining"
        again = c.get(EXPORT, params={**WINDOW, "pageSize": 10, "continuationToken": token})
        assert again.status_code == 410
        clock.advance(6)  # the seed's five seconds of draining
        assert every_task(c.get(STATUS).json()) == {}
        assert c.get(f"{STATUS}/{token}").status_code == 404


def test_a_finished_export_is_completed_with_its_row_counts(sqlite_warehouse):
    with client(sqlite_warehouse.url) as c:
        params = {**WINDOW, "billers": "12", "pageSize": 50}
        page = c.get(EXPORT, params=params).json()
        first_token, rows, last = page["continuationToken"], len(page["rows"]), page
        token = first_token
        while token:
            last = c.get(EXPORT, params={**params, "continuationToken": token}).json()
            rows += len(last["rows"])
            token = last["continuationToken"]
        assert rows > 50 and len(last["rows"]) < 50
        queue, task = every_task(c.get(STATUS).json())[first_token]
    assert queue == "completed" and task["status"] == "COMPLETED"
    assert task["accumulate"] == rows and task["metric"] == len(last["rows"])


def test_a_one_page_export_is_named_by_its_first_token_too(sqlite_warehouse):
    """The first token of an export that ends on page 1 is still its name; as a page token it
    asks for a page that does not exist (400, one line)."""
    with client(sqlite_warehouse.url) as c:
        first = c.get(EXPORT, params={"fromDate": "2030-01-01", "toDate": "2030-02-01"})
        assert first.json()["continuationToken"] is None
        (name,) = every_task(c.get(STATUS).json())
        task = c.get(f"{STATUS}/{first.headers['export-task-id']}").json()
        assert task["task_id"] == name and task["status"] == "COMPLETED"
        assert c.get(f"{STATUS}/{name}").json()["task_id"] == name
        params = {"fromDate": "2030-01-01", "toDate": "2030-02-01", "continuationToken": name}
        r = c.get(EXPORT, params=params)
        assert r.status_code == 400 and "only 1 page" in r.json()["detail"]


def test_another_callers_token_or_a_forged_one_finds_nothing(sqlite_warehouse, tokens_file):
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ops = {"Authorization": f"Bearer {OPS_TOKEN}"}
    with client(sqlite_warehouse.url, tokens_file=str(tokens_file)) as c:
        token = c.get(EXPORT, params={**WINDOW, "pageSize": 5}, headers=admin).json()[
            "continuationToken"
        ]
        assert every_task(c.get(STATUS, headers=ops).json()) == {}
        for method in (c.get, c.delete):
            r = method(f"{STATUS}/{token}", headers=ops)
            assert r.status_code == 404 and r.json()["parameter"] == "task_id"
        forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
        assert c.get(f"{STATUS}/{forged}", headers=admin).status_code == 404
        assert c.get(f"{STATUS}/{token}", headers=admin).json()["status"] != "CANCELED"
        assert c.get(STATUS).status_code == 401


def test_the_routes_are_in_the_openapi_spec(sqlite_warehouse):
    with client(sqlite_warehouse.url) as c:
        paths = c.get("/openapi.json").json()["paths"]
    assert set(paths[STATUS]) == {"get"}
    assert set(paths[STATUS + "/{task_id}"]) == {"get", "delete"}
    schema = paths[STATUS]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/BiviewsQueues")


def test_seed_dates():
    assert seed_date("2018-01-26T00:00:00Z") == "2018-01-26 00:00:00"
    assert seed_date("2020-07-02T13:04:05") == "2020-07-02 13:04:05"
