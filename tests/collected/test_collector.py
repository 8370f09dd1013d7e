"""The collector and the consumer against the real NATS server (a stream of their own)."""

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta

import httpx
import pytest
from starlette.testclient import TestClient

from metrics_pipeline.collected.collector import create_collector_app
from metrics_pipeline.collected.consumer import consume
from metrics_pipeline.web.auth import token_digest
from tests.api.helpers import oversized_requests

from .conftest import sqlite_store
from .processes import CollectorProcess, family_env

pytestmark = pytest.mark.nats

LOOPBACK = ("127.0.0.1", 50000)


@contextmanager
def running(settings, client=LOOPBACK) -> Iterator[TestClient]:
    """The collector app, started, once it is connected to the bus."""
    with TestClient(create_collector_app(settings), client=client) as c:
        deadline = time.monotonic() + 10
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "collector never connected to the bus"
            time.sleep(0.05)
        yield c


def now_iso(delta=timedelta()) -> str:
    return (datetime.now().astimezone() + delta).isoformat()


def test_get_post_and_batches_are_stored_and_written_once(bus_settings, tmp_path):
    store = sqlite_store(tmp_path)
    with running(bus_settings) as c:
        r = c.get("/collect", params={"app": "web", "data": json.dumps({"rt": 12.5, "cpu": 3})})
        assert r.status_code == 202, r.text
        assert r.json() == {"accepted": 2, "messages": 1, "duplicate": False}
        one = {"app": "web", "id": "req-1", "time": now_iso(), "metrics": {"rt": 20}}
        assert c.post("/collect", json=one).json()["duplicate"] is False
        # A client retry of the same id: stored once by the bus.
        assert c.post("/collect", json=one).json()["duplicate"] is True
        batch = [{"app": "api", "id": f"b{i}", "metrics": {"rt": i, "err": 0}} for i in range(50)]
        assert c.post("/collect", json=batch).json() == {
            "accepted": 100,
            "messages": 50,
            "duplicate": False,
        }
        # The same batch again: the bus stores it (no single id), the raw table does not.
        assert c.post("/collect", json=batch).status_code == 202
        metrics = c.get("/metrics").text
        assert "collector_points_accepted_total 204.0" in metrics
        assert "collector_bus_publish_seconds_count 5.0" in metrics
    result = asyncio.run(consume(bus_settings, store, once=True))
    assert result.messages == 4 and result.inserted == 103 and result.duplicates == 100
    with store.engine.connect() as conn:
        from sqlalchemy import func, select

        assert conn.execute(select(func.count()).select_from(store.t.raw)).scalar_one() == 103
    # Draining again finds nothing; a second consumer run stores nothing twice.
    assert asyncio.run(consume(bus_settings, store, once=True)).messages == 0


@pytest.mark.parametrize(
    "send, status, field",
    [
        (lambda c: c.post("/collect", content=b"{not json"), 400, "body"),
        (lambda c: c.post("/collect", json={"app": "a", "metrics": {"k": "x"}}), 400, "metrics.k"),
        (lambda c: c.post("/collect", json={"app": "a", "metrics": {"b c": 1}}), 400, "metrics"),
        (lambda c: c.post("/collect", json=[]), 400, "body"),
        (
            lambda c: c.post("/collect", json=[{"app": "a", "metrics": {"k": 1}}, {"app": "a"}]),
            400,
            "[1].metrics",
        ),
        (
            lambda c: c.post(
                "/collect", json={"app": "a", "time": "2001-01-01T00:00:00Z", "metrics": {"k": 1}}
            ),
            400,
            "time",
        ),
        (lambda c: c.get("/collect", params={"app": "a"}), 400, "data"),
        (lambda c: c.get("/collect", params={"app": "a", "data": "{"}), 400, "data"),
        (lambda c: c.get("/collect", params={"app": "a", "data": '{"k": "NaN"}'}), 400, "data.k"),
        # Nested deeper than the parser goes (once a RecursionError, 500).
        (lambda c: c.post("/collect", content=b"[" * 5000), 400, "body"),
        (lambda c: c.post("/collect", content=b'{"a":' * 5000), 400, "body"),
        (lambda c: c.get("/collect", params={"app": "a", "data": "[" * 5000}), 400, "data"),
        # Finite values whose hourly statistics would overflow (once stored, then inf).
        (
            lambda c: c.post("/collect", json={"app": "a", "metrics": {"k": -1e308}}),
            400,
            "metrics.k",
        ),
        (lambda c: c.get("/collect", params={"app": "a", "data": '{"k": 1e308}'}), 400, "data.k"),
    ],
)
def test_bad_input_is_400_naming_the_field(bus_settings, send, status, field):
    with running(bus_settings) as c:
        r = send(c)
        assert r.status_code == status, r.text
        assert r.json()["field"] == field
        assert r.json()["detail"].startswith(f"{field}: ")
        assert 'collector_requests_rejected_total{reason="invalid"} 1.0' in c.get("/metrics").text


def test_oversized_body_and_batch_are_413(bus_settings):
    settings = replace(bus_settings, max_body_bytes=2000, max_points=10)
    with running(settings) as c:
        big = {"app": "a", "metrics": {f"k{i}": i for i in range(300)}}
        assert c.post("/collect", json=big).status_code == 413
        many = [{"app": "a", "metrics": {"k": i}} for i in range(11)]
        r = c.post("/collect", json=many)
        assert r.status_code == 413 and "more than 10 data points" in r.json()["detail"]


def test_a_body_over_the_cap_is_413_for_every_client(bus_settings, tmp_path):
    """A real collector process and real clients: the 413 reaches each of them, even those that
    close the connection after the answer (once a connection reset)."""
    env = family_env(bus_settings, f"sqlite:///{tmp_path / 'w.db'}")
    collector = CollectorProcess(env, tmp_path / "collector.log").wait_ready(60)
    try:
        answers = oversized_requests(f"{collector.url}/collect")
        assert {name: status for name, (status, _) in answers.items()} == dict.fromkeys(
            ("urllib", "httpx", "httpx chunked", "curl"), 413
        ), answers
        for _, text in answers.values():
            assert json.loads(text) == {"detail": "body: more than 1048576 bytes"}
        one = {"app": "web", "metrics": {"rt": 1.5}}
        assert httpx.post(f"{collector.url}/collect", json=one).status_code == 202
    finally:
        collector.stop()


def test_api_keys(bus_settings, tmp_path):
    keys = tmp_path / "keys.json"
    keys.write_text(
        json.dumps(
            [
                {"name": "web", "sha256": token_digest("web-key"), "apps": ["web"]},
                {"name": "all", "sha256": token_digest("all-key"), "apps": "*"},
            ]
        )
    )
    settings = replace(bus_settings, tokens_file=str(keys))
    point = {"app": "web", "metrics": {"k": 1}}
    with running(settings, ("10.1.2.3", 4000)) as c:
        assert c.post("/collect", json=point).status_code == 401
        # Keys are checked before the body is read: no parsing for strangers.
        assert c.post("/collect", content=b"{not json").status_code == 401
        bad = {"Authorization": "Bearer nope"}
        assert c.post("/collect", json=point, headers=bad).status_code == 401
        web = {"Authorization": "Bearer web-key"}
        assert c.post("/collect", json=point, headers=web).status_code == 202
        other = {"app": "billing", "metrics": {"k": 1}}
        r = c.post("/collect", json=other, headers=web)
        assert r.status_code == 403 and "billing" in r.json()["detail"]
        assert (
            c.post("/collect", json=other, headers={"Authorization": "Bearer all-key"}).status_code
            == 202
        )
    # Without keys, only loopback clients are served.
    with running(bus_settings, ("10.1.2.3", 4000)) as c:
        assert c.post("/collect", json=point).status_code == 401


def test_a_full_bus_is_429_with_retry_after(bus_settings):
    settings = replace(bus_settings, stream_max_msgs=3)
    with running(settings) as c:
        codes = [c.post("/collect", json={"app": "a", "metrics": {"k": i}}) for i in range(5)]
        assert [r.status_code for r in codes] == [202, 202, 202, 429, 429]
        assert codes[-1].headers["Retry-After"] == str(settings.retry_after_s)
        assert "maximum messages" in codes[-1].json()["detail"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_bus_is_503_at_once(bus_settings):
    settings = replace(bus_settings, bus_url=f"nats://127.0.0.1:{free_port()}")
    with TestClient(create_collector_app(settings), client=LOOPBACK) as c:
        started = time.monotonic()
        r = c.post("/collect", json={"app": "a", "metrics": {"k": 1}})
        assert r.status_code == 503 and r.headers["Retry-After"]
        assert time.monotonic() - started < 2
        assert c.get("/readyz").status_code == 503 and c.get("/healthz").status_code == 200


def test_an_undecodable_message_is_dropped_and_the_rest_written(bus_settings, tmp_path):
    import nats

    from metrics_pipeline.collected.consumer import ConsumerMetrics

    with running(bus_settings) as c:
        assert c.post("/collect", json={"app": "a", "metrics": {"k": 1}}).status_code == 202

    async def publish_garbage():
        nc = await nats.connect(bus_settings.bus_url)
        await nc.jetstream().publish(bus_settings.subject, b"not json")
        await nc.close()

    asyncio.run(publish_garbage())
    metrics = ConsumerMetrics()
    result = asyncio.run(consume(bus_settings, sqlite_store(tmp_path), once=True, metrics=metrics))
    assert (result.messages, result.inserted) == (1, 1)
    assert metrics.registry.get_sample_value("consumer_messages_undecodable_total") == 1
