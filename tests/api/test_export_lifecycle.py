"""Every queue transition of an export task (seed 003 timings), through the HTTP API with an
injected clock: active -> stale -> active; stale -> draining -> gone; completed -> draining ->
gone; canceled -> draining -> gone. Tokens of a draining or gone task are 410."""

import pytest
from fastapi.testclient import TestClient

from metrics_pipeline.api import ApiSettings, create_app
from metrics_pipeline.api.exports.service import ExportSettings

from .exports_support import EXPORT, WINDOW, Clock, wait_for
from .helpers import LOOPBACK_CLIENT

PARAMS = {**WINDOW, "pageSize": 10}


@pytest.fixture
def clocked(sqlite_warehouse):
    clock = Clock()
    # No fetch-ahead: its events would move "last activity" behind the test's back.
    settings = ApiSettings(
        warehouse_url=sqlite_warehouse.url, exports=ExportSettings(pages_ahead=0)
    )
    with TestClient(create_app(settings, clock=clock), client=LOOPBACK_CLIENT) as c:
        yield c, clock


def start(c, params=PARAMS):
    r = c.get(EXPORT, params=params)
    assert r.status_code == 200, r.text
    task_id = r.headers["export-task-id"]
    wait_for(
        lambda: (
            c.get(f"/api/v2/exports-status/{task_id}").json()["status"]
            in ("MAX-REQUESTED-PAGE-REACHED", "COMPLETED")
        ),
        "the task to settle",
    )
    return task_id, r.json()["continuationToken"]


def queue(c, task_id) -> str | None:
    queues = c.get("/api/v2/exports-status").json()
    found = [name for name, tasks in queues.items() if any(t["task_id"] == task_id for t in tasks)]
    assert len(found) <= 1
    return found[0] if found else None


def next_page(c, token, params=PARAMS):
    return c.get(EXPORT, params={**params, "continuationToken": token})


def test_idle_goes_stale_and_a_resumed_task_is_active_again(clocked):
    c, clock = clocked
    task_id, token = start(c)
    clock.advance(240)
    assert queue(c, task_id) == "active"  # 240 s idle: not yet
    clock.advance(1)
    assert queue(c, task_id) == "stale"
    clock.advance(298)  # 539 s idle, stale for 299 s: still resumable
    assert queue(c, task_id) == "stale"
    r = next_page(c, token)
    assert r.status_code == 200
    assert queue(c, task_id) == "active"
    assert c.get(f"/api/v2/exports-status/{task_id}").json()["pages_served"] == 2


def test_a_stale_task_not_resumed_drains_then_goes(clocked):
    c, clock = clocked
    task_id, token = start(c)
    clock.advance(241)
    assert queue(c, task_id) == "stale"
    clock.advance(300)  # 241 + 300 > 240 + 300
    assert queue(c, task_id) == "draining"
    r = next_page(c, token)
    assert r.status_code == 410 and "expired" in r.json()["detail"]
    clock.advance(5)
    assert queue(c, task_id) is None
    assert c.get(f"/api/v2/exports-status/{task_id}").status_code == 404
    r = next_page(c, token)
    assert r.status_code == 410 and r.json()["parameter"] == "continuationToken"


def test_completed_stays_300_s_then_drains_5_s_then_goes(clocked):
    c, clock = clocked
    task_id, token = start(c, {**PARAMS, "pageSize": 10000})
    assert token is None
    assert queue(c, task_id) == "completed"
    clock.advance(299)
    assert queue(c, task_id) == "completed"
    clock.advance(1)
    assert queue(c, task_id) == "draining"
    clock.advance(4.9)
    assert queue(c, task_id) == "draining"
    clock.advance(0.1)
    assert queue(c, task_id) is None


def test_a_completed_task_is_kept_while_its_pages_are_read(clocked):
    c, clock = clocked
    params = {**PARAMS, "pageSize": 200}
    task_id, token = start(c, params)
    # With pages_ahead=0 the task completes when its last page is read.
    clock.advance(200)
    r = next_page(c, token, params)
    assert r.status_code == 200 and r.json()["continuationToken"] is None
    wait_for(lambda: queue(c, task_id) == "completed", "the task to complete")
    clock.advance(299)
    assert queue(c, task_id) == "completed"  # counted from the last activity
    assert next_page(c, token, params).status_code == 200  # the last page again
    clock.advance(300)
    assert queue(c, task_id) == "draining"
    assert next_page(c, token, params).status_code == 410


def test_a_canceled_task_drains_then_goes(clocked):
    c, clock = clocked
    task_id, token = start(c)
    assert c.delete(f"/api/v2/exports-status/{task_id}").json()["status"] == "CANCELED"
    assert queue(c, task_id) == "draining"
    clock.advance(5)
    assert queue(c, task_id) is None
    assert c.delete(f"/api/v2/exports-status/{task_id}").status_code == 404
    assert next_page(c, token).status_code == 410
