"""The reference data cache against the real Redis server, and with Redis dead or silent.

Keys use a prefix unique to each test, deleted afterwards; the machine's Redis is never stopped:
"Redis down" is a port where nothing listens, "Redis hangs" a socket that never answers.
"""

import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from metrics_pipeline.api import ApiSettings, create_app
from metrics_pipeline.semantics import METRIC_TYPES

from .helpers import LOOPBACK_CLIENT, REDIS_TEST_URL, free_port

EXPECTED_NAMES = [m.name for m in METRIC_TYPES]
REDIS_SERVER = shutil.which("redis-server")


@pytest.fixture
def redis_server() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_TEST_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is not reachable at {REDIS_TEST_URL} (make services starts it)")
        pytest.skip(f"Redis is not reachable at {REDIS_TEST_URL}")
    yield client
    client.close()


@pytest.fixture
def prefix(redis_server) -> Iterator[str]:
    value = f"mp-test-{uuid.uuid4().hex[:10]}:"
    yield value
    for key in redis_server.scan_iter(match=f"{value}*"):
        redis_server.delete(key)


def app_client(url: str, **settings) -> TestClient:
    return TestClient(
        create_app(ApiSettings(warehouse_url=url, **settings)), client=LOOPBACK_CLIENT
    )


def rename_metric(url: str, metric_id: int, name: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text('UPDATE "MetricType" SET "Name" = :n WHERE "MetricTypeId" = :i'),
            {"n": name, "i": metric_id},
        )
    engine.dispose()


@pytest.mark.redis
def test_reference_data_is_read_through_redis(sqlite_warehouse, redis_server, prefix):
    url = sqlite_warehouse.url
    with app_client(url, redis_url=REDIS_TEST_URL, cache_prefix=prefix, cache_ttl_s=60) as c:
        first = c.get("/api/metric-types")
        assert first.headers["X-Cache"] == "miss"
        assert [m["name"] for m in first.json()] == EXPECTED_NAMES
        keys = list(redis_server.scan_iter(match=f"{prefix}*"))
        assert len(keys) == 1 and keys[0].decode().endswith(":metric-types")
        assert 0 < redis_server.ttl(keys[0]) <= 60

        rename_metric(url, 1, "RenamedInWarehouse")
        try:
            second = c.get("/api/metric-types")
            assert second.headers["X-Cache"] == "hit"
            assert second.json() == first.json()  # from Redis, not the warehouse
            redis_server.delete(keys[0])
            third = c.get("/api/metric-types")
            assert third.headers["X-Cache"] == "miss"
            assert third.json()[0]["name"] == "RenamedInWarehouse"
        finally:
            rename_metric(url, 1, EXPECTED_NAMES[0])

        assert c.get("/api/timestamp-types").headers["X-Cache"] == "miss"
        assert c.get("/api/timestamp-types").headers["X-Cache"] == "hit"
        assert c.get("/api/health").json()["cache"] == "ok"


@pytest.mark.redis
def test_entries_expire_after_the_ttl(sqlite_warehouse, redis_server, prefix):
    with app_client(
        sqlite_warehouse.url, redis_url=REDIS_TEST_URL, cache_prefix=prefix, cache_ttl_s=1
    ) as c:
        assert c.get("/api/timestamp-types").headers["X-Cache"] == "miss"
        assert c.get("/api/timestamp-types").headers["X-Cache"] == "hit"
        time.sleep(1.3)
        assert c.get("/api/timestamp-types").headers["X-Cache"] == "miss"


@pytest.mark.redis
def test_an_unreadable_entry_is_replaced_not_an_error(sqlite_warehouse, redis_server, prefix):
    with app_client(sqlite_warehouse.url, redis_url=REDIS_TEST_URL, cache_prefix=prefix) as c:
        c.get("/api/metric-types")
        (key,) = redis_server.scan_iter(match=f"{prefix}*")
        redis_server.set(key, b"\xff not json")
        response = c.get("/api/metric-types")
        assert response.status_code == 200 and response.headers["X-Cache"] == "miss"
        assert [m["name"] for m in response.json()] == EXPECTED_NAMES
        assert c.get("/api/metric-types").headers["X-Cache"] == "hit"


@pytest.mark.redis
def test_two_warehouses_do_not_share_entries(sqlite_warehouse, tmp_path, redis_server, prefix):
    from .helpers import populate

    other = f"sqlite:///{tmp_path / 'other.db'}"
    populate(other)
    rename_metric(other, 2, "OtherWarehouse")
    with app_client(sqlite_warehouse.url, redis_url=REDIS_TEST_URL, cache_prefix=prefix) as a:
        a.get("/api/metric-types")
    with app_client(other, redis_url=REDIS_TEST_URL, cache_prefix=prefix) as b:
        response = b.get("/api/metric-types")
        assert response.headers["X-Cache"] == "miss"
        assert response.json()[1]["name"] == "OtherWarehouse"


def test_redis_down_falls_back_to_the_warehouse_quickly(sqlite_warehouse):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with app_client(sqlite_warehouse.url, redis_url=dead) as c:
        started = time.monotonic()
        for _ in range(20):
            response = c.get("/api/metric-types")
            assert response.status_code == 200
            assert response.headers["X-Cache"] == "unavailable"
            assert [m["name"] for m in response.json()] == EXPECTED_NAMES
        assert time.monotonic() - started < 2.0
        health = c.get("/api/health")
        assert health.status_code == 200 and health.json()["cache"] == "unavailable"


def test_a_silent_redis_costs_one_short_timeout_then_is_skipped(sqlite_warehouse):
    # A listener that accepts connections and never answers: reads must time out, not hang.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    try:
        with app_client(sqlite_warehouse.url, redis_url=url, redis_timeout_s=0.2) as c:
            started = time.monotonic()
            first = c.get("/api/timestamp-types")
            first_took = time.monotonic() - started
            assert first.status_code == 200 and first.headers["X-Cache"] == "unavailable"
            assert 0.15 < first_took < 1.5
            started = time.monotonic()
            for _ in range(10):
                assert c.get("/api/timestamp-types").headers["X-Cache"] == "unavailable"
            assert time.monotonic() - started < 0.5  # skipped while known down
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def test_no_redis_configured_reads_the_warehouse(client):
    response = client.get("/api/metric-types")
    assert response.status_code == 200 and response.headers["X-Cache"] == "disabled"
    assert [m["name"] for m in response.json()] == EXPECTED_NAMES


def start_own_redis(port: int) -> subprocess.Popen:
    """A private redis-server on ``port`` (ours to stop; the machine's Redis is left alone)."""
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
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_timeout=0.2, socket_connect_timeout=0.2)
    for _ in range(100):
        try:
            client.ping()
            client.close()
            return process
        except redis.RedisError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start")


@pytest.mark.redis
@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")
def test_an_outage_is_survived_and_redis_used_again_after_it(sqlite_warehouse):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = start_own_redis(port)
    try:
        with app_client(sqlite_warehouse.url, redis_url=url, redis_retry_after_s=0.5) as c:
            assert c.get("/api/metric-types").headers["X-Cache"] == "miss"
            assert c.get("/api/metric-types").headers["X-Cache"] == "hit"
            server.terminate()
            server.wait(timeout=10)
            down = c.get("/api/metric-types")
            assert down.status_code == 200 and down.headers["X-Cache"] == "unavailable"
            assert [m["name"] for m in down.json()] == EXPECTED_NAMES
            server = start_own_redis(port)  # empty: it keeps nothing on disk
            assert c.get("/api/metric-types").headers["X-Cache"] == "unavailable"  # paused
            time.sleep(0.6)
            assert c.get("/api/metric-types").headers["X-Cache"] == "miss"
            assert c.get("/api/metric-types").headers["X-Cache"] == "hit"
    finally:
        server.terminate()
        server.wait(timeout=10)
