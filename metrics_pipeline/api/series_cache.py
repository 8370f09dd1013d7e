"""A short-lived in-process cache of /api/metrics answers, keyed by the exact query.

Many portal users look at the same biller, metric and (hour-aligned) range; the warehouse
changes when the pipeline writes, every few minutes at most. Keeping each answer a few seconds
serves the repeats from memory. An answer is at most ``ttl_s`` seconds old; 0 turns it off.

Entries live between half and all of ``ttl_s`` (chosen at random) so that answers cached
together do not all expire together, and concurrent misses of one query share one load.
"""

import asyncio
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable


class SeriesCache:
    """Response bodies by query, each kept ``ttl_s`` seconds, at most ``max_bytes`` in all."""

    def __init__(self, ttl_s: float, max_bytes: int = 64 * 2**20):
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._loading: dict[Hashable, asyncio.Future] = {}

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def get(self, key: Hashable) -> bytes | None:
        if not self.enabled:
            return None
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= now:
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: Hashable, body: bytes) -> None:
        if not self.enabled or len(body) > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                self._drop(key)
            lifetime = self.ttl_s * (0.5 + 0.5 * random.random())
            self._entries[key] = (time.monotonic() + lifetime, body)
            self._bytes += len(body)
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    async def get_or_load(
        self, key: Hashable, load: Callable[[], Awaitable[bytes]]
    ) -> tuple[bytes, str]:
        """The cached body of ``key`` or the one ``load()`` gives (awaited once however many
        requests miss together); and ``hit``, ``miss`` or ``disabled``."""
        if not self.enabled:
            return await load(), "disabled"
        body = self.get(key)
        if body is not None:
            return body, "hit"
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending), "hit"
        future = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            body = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise
        finally:
            self._loading.pop(key, None)
        future.set_result(body)
        self.put(key, body)
        return body, "miss"

    def _drop(self, key: Hashable) -> None:
        _, body = self._entries.pop(key)
        self._bytes -= len(body)

    def __len__(self) -> int:
        return len(self._entries)
