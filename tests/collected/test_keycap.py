"""The cap on distinct keys per app: the pure rule, and collectors sharing the real bus."""

import asyncio
from dataclasses import replace

import pytest

from metrics_pipeline.collected.keycap import (
    KeyCapReached,
    admit,
    decode_keys,
    encode_keys,
    entry_name,
    keys_by_app,
)
from metrics_pipeline.collected.rules import Item
from metrics_pipeline.collected.settings import CollectedSettings
from metrics_pipeline.resources.engines import ConfigurationError

from .test_collector import running


def test_admit_counts_only_new_keys():
    known = frozenset({"a", "b"})
    assert admit("web", known, frozenset({"a", "c"}), 3) == {"a", "b", "c"}
    assert admit("web", known, frozenset({"a", "b"}), 2) == known
    with pytest.raises(
        KeyCapReached, match=r"at most 2 distinct keys per app .*; 1 new key refused,"
    ):
        admit("web", known, frozenset({"a", "c"}), 2)
    assert admit("web", known, frozenset({"e", "d", "c"}), 4, partial=True) == {"a", "b", "c", "d"}
    assert admit("web", known, frozenset({"c"}), 2, partial=True) == known


def test_keys_by_app_and_encoding():
    items = [Item("1", "web", None, {"a": 1, "b": 2}), Item("2", "api", None, {"a": 1})]
    assert keys_by_app(items) == {"web": {"a", "b"}, "api": {"a"}}
    assert decode_keys(encode_keys({"x", "y.z"})) == {"x", "y.z"}
    assert decode_keys(b"") == frozenset()
    assert entry_name("a..b") == "app.612e2e62"


def test_the_setting_is_bounded():
    assert (
        CollectedSettings.from_environ({"METRICS_COLLECTOR_MAX_KEYS_PER_APP": "0"}).max_keys_per_app
        == 0
    )
    with pytest.raises(ConfigurationError, match="METRICS_COLLECTOR_MAX_KEYS_PER_APP"):
        CollectedSettings.from_environ({"METRICS_COLLECTOR_MAX_KEYS_PER_APP": "100000"})


def post(c, app, keys):
    return c.post("/collect", json={"app": app, "metrics": dict.fromkeys(keys, 1.0)})


@pytest.mark.nats
def test_a_burst_of_new_keys_beyond_the_cap_is_429_and_known_keys_pass(bus_settings):
    settings = replace(bus_settings, max_keys_per_app=50)
    first = [f"k{i}" for i in range(50)]
    with running(settings) as c, running(settings) as other:
        assert post(c, "web", first[:30]).status_code == 202
        assert post(c, "web", first[30:]).status_code == 202
        # 2,000 new keys, one request each, some through a second collector on the same bus.
        codes = [post(c if i % 2 else other, "web", [f"new{i}"]) for i in range(2000)]
        assert {r.status_code for r in codes} == {429}
        detail = codes[0].json()["detail"]
        assert "at most 50 distinct keys per app" in detail and "'web'" in detail
        assert "METRICS_COLLECTOR_MAX_KEYS_PER_APP" in detail
        # Known keys keep being accepted, by both collectors; other apps have caps of their own.
        assert post(c, "web", first).status_code == 202
        assert post(other, "web", first[:5]).status_code == 202
        assert post(other, "api", first).status_code == 202
        # A request mixing known keys and one new key is refused whole.
        assert post(other, "web", [*first[:3], "brand-new"]).status_code == 429
        metrics = c.get("/metrics").text
        assert 'collector_requests_rejected_total{reason="key_cap"}' in metrics


@pytest.mark.nats
def test_concurrent_collectors_never_exceed_the_cap(bus_settings):
    """Two collectors racing to add keys: the registry's compare-and-set keeps the cap exact."""
    from metrics_pipeline.collected.bus import Publisher

    settings = replace(bus_settings, max_keys_per_app=40)

    async def race():
        publishers = [await Publisher.open(settings) for _ in range(2)]
        try:

            async def add(p, i):
                try:
                    await p.register_keys([Item(str(i), "web", None, {f"k{i}": 1.0})])
                    return True
                except KeyCapReached:
                    return False

            results = await asyncio.gather(*(add(publishers[i % 2], i) for i in range(100)))
            entry = await publishers[0].registry.kv.get(entry_name("web"))
            return results, decode_keys(entry.value)
        finally:
            for p in publishers:
                await p.close()

    results, stored = asyncio.run(race())
    assert sum(results) == len(stored) == 40


@pytest.mark.nats
def test_otlp_points_of_keys_beyond_the_cap_are_rejected_points_or_a_429(bus_settings, tmp_path):
    from google.rpc.status_pb2 import Status
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceResponse,
    )

    from metrics_pipeline.clock import utc_now
    from metrics_pipeline.collected.consumer import consume

    from .conftest import sqlite_store
    from .test_otlp import gauge, request_of, stored

    settings = replace(bus_settings, max_keys_per_app=3)
    headers = {"Content-Type": "application/x-protobuf"}

    def export(*names):
        body = request_of("web", *(gauge(n, 1.0, when=utc_now()) for n in names))
        return c.post("/v1/metrics", content=body.SerializeToString(), headers=headers)

    with running(settings) as c:
        assert export("a", "b").status_code == 200
        # Known keys and new ones together: the known and those that fit are stored, the others
        # are rejected points naming the cap.
        mixed = export("a", "c", "d", "e")
        assert mixed.status_code == 200
        partial = ExportMetricsServiceResponse.FromString(mixed.content).partial_success
        assert partial.rejected_data_points == 2
        assert "at most 3 distinct keys per app" in partial.error_message
        # Only new keys beyond the cap: a 429 naming it.
        refused = export("x", "y")
        assert refused.status_code == 429
        status = Status.FromString(refused.content)
        assert status.code == 8 and "at most 3 distinct keys per app" in status.message
        assert export("b").status_code == 200
    store = sqlite_store(tmp_path)
    asyncio.run(consume(bus_settings, store, once=True))
    assert [k for _, k, _ in stored(store)] == ["a", "a", "b", "b", "c"]
