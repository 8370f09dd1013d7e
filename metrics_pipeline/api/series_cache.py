"""A short-lived in-process cache of /api/metrics answers, keyed by the exact query.

Many portal users look at the same biller, metric and (hour-aligned) range; the warehouse
changes when the pipeline writes, every few minutes at most. Keeping each answer a few seconds
serves the repeats from memory. No answer is ever older than ``ttl_s`` seconds; 0 turns it off.

Each entry is refreshed ahead: once it is a random 50-80 % of ``ttl_s`` old, the next request
still gets it and starts one reload in the background, so a query that is asked often never
waits for the warehouse, and entries made together do not expire together. Concurrent misses of
one query share one load.
"""

import asyncio
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

HIT, MISS, DISABLED = "hit", "miss", "disabled"


@dataclass(frozen=True)
class _Entry:
    refresh_at: float
    expires_at: float
    body: bytes


class SeriesCache:
    """Response bodies by query, none older than ``ttl_s``, at most ``max_bytes`` in all."""

    def __init__(self, ttl_s: float, max_bytes: int = 64 * 2**20):
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._loading: dict[Hashable, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def _entry(self, key: Hashable) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.expires_at <= time.monotonic():
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return entry

    def get(self, key: Hashable) -> bytes | None:
        """The body cached for ``key`` if it is younger than ``ttl_s``."""
        entry = self._entry(key) if self.enabled else None
        return None if entry is None else entry.body

    def put(self, key: Hashable, body: bytes) -> None:
        if not self.enabled or len(body) > self.max_bytes:
            return
        now = time.monotonic()
        entry = _Entry(now + self.ttl_s * random.uniform(0.5, 0.8), now + self.ttl_s, body)
        with self._lock:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = entry
            self._bytes += len(body)
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    async def get_or_load(
        self, key: Hashable, load: Callable[[], Awaitable[bytes]]
    ) -> tuple[bytes, str]:
        """The cached body of ``key`` or the one ``load()`` gives (awaited once however many
        requests miss together); and ``hit``, ``miss`` or ``disabled``."""
        if not self.enabled:
            return await load(), DISABLED
        entry = self._entry(key)
        if entry is not None:
            if entry.refresh_at <= time.monotonic() and key not in self._loading:
                self._start_load(key, load)
            return entry.body, HIT
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending), HIT
        # Shielded: a client that goes away does not cancel the load others may be awaiting.
        return await asyncio.shield(self._start_load(key, load)), MISS

    def _start_load(self, key: Hashable, load: Callable[[], Awaitable[bytes]]) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._loading[key] = future

        async def run() -> None:
            try:
                body = await load()
            except Exception as exc:
                future.set_exception(exc)
                future.exception()  # retrieved: no warning when nobody waits (refresh ahead)
            else:
                self.put(key, body)
                future.set_result(body)
            finally:
                self._loading.pop(key, None)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return future

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key)
        self._bytes -= len(entry.body)

    def __len__(self) -> int:
        return len(self._entries)
