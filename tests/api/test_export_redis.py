"""Exports with the Redis task store: API processes share tasks (two uvicorn workers), an API
restarted mid-export continues it, 50 concurrent exports each get every row once, and a Redis
that stops mid-export gives 503 (never a wrong page). The machine's Redis is never stopped: the
fault test starts its own redis-server on a free port."""

import os
import shutil
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from metrics_pipeline.api import ApiSettings, create_app

from .exports_support import EXPORT, OBJECT, WINDOW, export_all, keys_of, table_keys, wait_for
from .helpers import REDIS_TEST_URL, ThreadedServer, free_port
from .test_exports import RANGE
from .test_server import env_for, run_api, wait_healthy

REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.redis


@pytest.fixture
def prefix() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_TEST_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is not reachable at {REDIS_TEST_URL} (make services starts it)")
        pytest.skip(f"Redis is not reachable at {REDIS_TEST_URL}")
    value = f"mp-test-{uuid.uuid4().hex[:10]}:"
    yield value
    for key in client.scan_iter(match=f"{value}*"):
        client.delete(key)
    client.close()


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_processes_share_tasks_and_a_restarted_api_continues(sqlite_warehouse, prefix):
    expected = table_keys(sqlite_warehouse.url, OBJECT, *RANGE)
    env = {
        **env_for(sqlite_warehouse),
        "REDIS_URL": REDIS_TEST_URL,
        "METRICS_API_CACHE_PREFIX": prefix,
        "METRICS_API_WORKERS": "2",
    }
    params = {**WINDOW, "pageSize": 30}
    port = free_port()
    first = run_api(env, "127.0.0.1", port)
    try:
        wait_healthy(port, first)
        base = f"http://127.0.0.1:{port}"
        rows, token = [], None
        for _ in range(4):  # new connections: the two workers share the task through Redis
            extra = {"continuationToken": token} if token else {}
            r = httpx.get(base + EXPORT, params={**params, **extra}, timeout=30)
            assert r.status_code == 200, r.text
            rows.extend(r.json()["rows"])
            token = r.json()["continuationToken"]
        task_id = r.headers["export-task-id"]
    finally:
        stop(first)
    port = free_port()
    second = run_api({**env, "METRICS_API_WORKERS": "1"}, "127.0.0.1", port)
    try:
        wait_healthy(port, second)
        base = f"http://127.0.0.1:{port}"
        while token:
            r = httpx.get(base + EXPORT, params={**params, "continuationToken": token}, timeout=30)
            assert r.status_code == 200, r.text
            rows.extend(r.json()["rows"])
            token = r.json()["continuationToken"]
        status = httpx.get(f"{base}/api/v2/exports-status/{task_id}", timeout=30).json()
    finally:
        stop(second)
    assert keys_of(rows) == expected
    assert status["accumulate"] == len(expected)
    assert status["queue"] == "completed"


def test_fifty_concurrent_exports_each_get_every_row_once(sqlite_warehouse, prefix):
    expected = table_keys(sqlite_warehouse.url, OBJECT, *RANGE)
    settings = ApiSettings(
        warehouse_url=sqlite_warehouse.url, redis_url=REDIS_TEST_URL, cache_prefix=prefix
    )
    port = free_port()
    server = ThreadedServer(create_app(settings), port)
    server.start()
    results: list = [None] * 50
    try:

        def one(i: int) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
                rows, _ = export_all(c, {**WINDOW, "pageSize": 20 + i})
                results[i] = keys_of(rows)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            queues = c.get("/api/v2/exports-status").json()
    finally:
        server.stop()
    assert all(r == expected for r in results)
    done = queues["completed"]
    assert len(done) == 50 and all(t["accumulate"] == len(expected) for t in done)


@pytest.fixture
def own_redis() -> Iterator[tuple[str, callable]]:
    """A redis-server of this test on a free port, and a function that stops it."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    wait_for(lambda: _pings(client), "the test's redis-server")

    def kill() -> None:
        process.terminate()
        process.wait(timeout=10)

    yield url, kill
    if process.poll() is None:
        kill()


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis.RedisError:
        return False


def test_redis_stopped_mid_export_is_503_not_a_wrong_page(sqlite_warehouse, own_redis):
    url, kill = own_redis
    settings = ApiSettings(warehouse_url=sqlite_warehouse.url, redis_url=url)
    port = free_port()
    server = ThreadedServer(create_app(settings), port)
    server.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            params = {**WINDOW, "pageSize": 25}
            first = c.get(EXPORT, params=params)
            assert first.status_code == 200
            token = first.json()["continuationToken"]
            kill()
            r = c.get(EXPORT, params={**params, "continuationToken": token})
            assert r.status_code == 503, r.text
            assert "export cache (Redis at" in r.json()["detail"]
            assert "unavailable" in r.json()["detail"]
            assert c.get("/api/v2/exports-status").status_code == 503
            assert c.get(EXPORT, params=params).status_code == 503  # no new task either
    finally:
        server.stop()
