"""The hot path: availability maths equal to semantics.percentage, and the short-lived answer
cache (hits, freshness after its TTL, one load for concurrent misses, bounded memory)."""

import asyncio
import time
from datetime import datetime
from decimal import Decimal

import numpy as np
import pytest
from fastapi.testclient import TestClient

from metrics_pipeline.api import ApiSettings, create_app
from metrics_pipeline.api.reader import availability
from metrics_pipeline.api.series_cache import SeriesCache
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import HOURLY, percentage

from .helpers import LOOPBACK_CLIENT, fixed_partial


def test_availability_equals_semantics_percentage_exactly():
    pairs = [(n, f) for n in range(0, 401) for f in range(0, n + 1)]
    rng = np.random.default_rng(5)
    big = rng.integers(1, 10**12, 20000)
    pairs += [(int(n), int(rng.integers(0, n + 1))) for n in big]
    for n, failed in pairs:
        want = percentage(n - failed, n)
        got = availability(n, failed)
        if want is None:
            assert got is None, (n, failed)
        else:
            assert Decimal(repr(got)) == want, (n, failed, got, want)
    assert availability(5, None) is None and availability(None, 0) is None


def test_answers_are_reused_for_the_ttl_then_fresh(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    warehouse = WarehouseResource(url=url)
    warehouse.write_partials(HOURLY, {(5, datetime(2025, 3, 1, 10)): fixed_partial(10, 1)})
    query = {"metricTypeId": 4, "timeStampTypeId": 1, "from": "2025-03-01", "to": "2025-03-02"}
    app = create_app(ApiSettings(warehouse_url=url, series_cache_s=1))
    with TestClient(app, client=LOOPBACK_CLIENT) as c:
        first = c.get("/api/metrics/5", params=query)
        assert first.headers["X-Cache"] == "miss" and len(first.json()["points"]) == 1
        warehouse.write_partials(HOURLY, {(5, datetime(2025, 3, 1, 11)): fixed_partial(20, 0)})
        again = c.get("/api/metrics/5", params=query)
        assert again.headers["X-Cache"] == "hit" and again.content == first.content
        other = c.get("/api/metrics/5", params={**query, "limit": 999})  # another query
        assert other.headers["X-Cache"] == "miss" and len(other.json()["points"]) == 2
        time.sleep(1.05)  # entries live at most the TTL
        fresh = c.get("/api/metrics/5", params=query)
        assert fresh.headers["X-Cache"] == "miss" and len(fresh.json()["points"]) == 2
        # A 404 is never cached: the biller's first rows show at once.
        assert c.get("/api/metrics/6", params=query).status_code == 404
        warehouse.write_partials(HOURLY, {(6, datetime(2025, 3, 1, 11)): fixed_partial(1, 0)})
        assert c.get("/api/metrics/6", params=query).status_code == 200
    warehouse._engines.dispose()


def test_ttl_zero_turns_the_cache_off(sqlite_warehouse):
    settings = ApiSettings.from_environ(
        {"METRICS_WAREHOUSE_URL": sqlite_warehouse.url, "METRICS_API_SERIES_CACHE_SECONDS": "0"}
    )
    query = {"metricTypeId": 1, "timeStampTypeId": 1, "from": "2025-03-01", "to": "2025-03-02"}
    with TestClient(create_app(settings), client=LOOPBACK_CLIENT) as c:
        for _ in range(2):
            assert c.get("/api/metrics/11", params=query).headers["X-Cache"] == "disabled"


def test_concurrent_misses_share_one_load():
    cache = SeriesCache(ttl_s=60)
    loads = 0

    async def load():
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.05)
        return b"body"

    async def main():
        return await asyncio.gather(*(cache.get_or_load("k", load) for _ in range(10)))

    results = asyncio.run(main())
    assert loads == 1
    assert [body for body, _ in results] == [b"body"] * 10
    assert sorted(how for _, how in results) == ["hit"] * 9 + ["miss"]


def test_an_entry_is_refreshed_ahead_and_never_older_than_the_ttl():
    cache = SeriesCache(ttl_s=1)
    version = 0

    async def load():
        nonlocal version
        version += 1
        await asyncio.sleep(0.05)
        return f"v{version}".encode()

    async def main():
        assert await cache.get_or_load("k", load) == (b"v1", "miss")
        assert await cache.get_or_load("k", load) == (b"v1", "hit")  # young: no reload
        assert version == 1
        await asyncio.sleep(0.85)  # past the refresh point (<= 80 % of the TTL), not expired
        assert await cache.get_or_load("k", load) == (b"v1", "hit")  # served, reload started
        assert await cache.get_or_load("k", load) == (b"v1", "hit")  # one reload only
        await asyncio.sleep(0.1)
        assert version == 2
        assert await cache.get_or_load("k", load) == (b"v2", "hit")
        await asyncio.sleep(1.05)  # nobody asked: expired, the next request waits for a load
        assert await cache.get_or_load("k", load) == (b"v3", "miss")

    asyncio.run(main())


def test_a_failed_load_is_not_cached_and_reaches_every_waiter():
    cache = SeriesCache(ttl_s=60)

    async def failing():
        await asyncio.sleep(0.01)
        raise RuntimeError("warehouse down")

    async def main():
        return await asyncio.gather(
            *(cache.get_or_load("k", failing) for _ in range(3)), return_exceptions=True
        )

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(main()))
    assert cache.get("k") is None and len(cache) == 0


def test_memory_is_bounded_least_recently_used_first():
    cache = SeriesCache(ttl_s=60, max_bytes=250)
    for key in "abc":
        cache.put(key, b"x" * 100)
    assert cache.get("a") is None  # evicted: 300 bytes > 250
    assert cache.get("c") is not None and cache.get("b") is not None  # "b" used last
    cache.put("d", b"y" * 100)
    assert cache.get("c") is None  # least recently used goes first
    assert cache.get("b") is not None and cache.get("d") is not None
    cache.put("huge", b"z" * 1000)
    assert cache.get("huge") is None


@pytest.mark.parametrize("ttl", [0, -1])
def test_non_positive_ttl_stores_nothing(ttl):
    cache = SeriesCache(ttl_s=ttl)
    cache.put("k", b"v")
    assert cache.get("k") is None and not cache.enabled
