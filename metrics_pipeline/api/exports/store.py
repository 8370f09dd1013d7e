"""Where export tasks and their fetched pages live: Redis when configured (several API processes
share tasks, and a restarted process continues them), else this process's memory.

A task is a flat record of JSON values plus its event list and its cached pages. The operations
that several requests or processes may race on (counting a page served, storing a page and its
bytes, dropping pages) are atomic in both stores.
"""

import json
import secrets
import threading
import time
from collections.abc import Iterable
from typing import Any, Protocol

import redis
from redis.exceptions import RedisError

from metrics_pipeline.resources.engines import ConfigurationError, safe_url


class StoreUnavailable(Exception):
    """The task store (Redis) does not answer."""


class TaskStore(Protocol):
    def create(self, task_id: str, record: dict[str, Any], ttl_s: float) -> None: ...
    def get(self, task_id: str) -> dict[str, Any] | None: ...
    def update(self, task_id: str, fields: dict[str, Any], ttl_s: float | None = None) -> None: ...
    def add_event(self, task_id: str, event: str, at: float) -> None: ...
    def events(self, task_id: str) -> list[tuple[str, float]]: ...
    def mark_served(self, task_id: str, page: int, rows: int) -> bool: ...
    def put_page(self, task_id: str, page: int, body: bytes, ttl_s: float) -> bool: ...
    def get_page(self, task_id: str, page: int) -> bytes | None: ...
    def drop_pages(self, task_id: str, pages: Iterable[int]) -> None: ...
    def task_ids(self) -> list[str]: ...
    def delete(self, task_id: str) -> None: ...
    def acquire(self, task_id: str, ttl_s: float) -> str | None: ...
    def release(self, task_id: str, owner: str) -> None: ...
    def secret(self) -> bytes: ...
    def close(self) -> None: ...


class MemoryStore:
    """Tasks in this process (the embedded default). Entries past their expiry are dropped."""

    def __init__(self, secret: bytes | None = None, monotonic=time.monotonic):
        self._lock = threading.RLock()
        self._records: dict[str, dict[str, Any]] = {}
        self._events: dict[str, list[tuple[str, float]]] = {}
        self._pages: dict[tuple[str, int], bytes] = {}
        self._expires: dict[str, float] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        # Without a configured secret, tokens are valid in this process only (as its tasks are).
        self._secret = secret or secrets.token_bytes(32)
        self._monotonic = monotonic

    def _live(self, task_id: str) -> dict[str, Any] | None:
        expires = self._expires.get(task_id)
        if expires is not None and expires <= self._monotonic():
            self.delete(task_id)
            return None
        return self._records.get(task_id)

    def create(self, task_id, record, ttl_s):
        with self._lock:
            self._records[task_id] = dict(record)
            self._events[task_id] = []
            self._expires[task_id] = self._monotonic() + ttl_s

    def get(self, task_id):
        with self._lock:
            record = self._live(task_id)
            return None if record is None else dict(record)

    def update(self, task_id, fields, ttl_s=None):
        with self._lock:
            record = self._live(task_id)
            if record is None:
                return
            record.update(fields)
            if ttl_s is not None:
                self._expires[task_id] = self._monotonic() + ttl_s

    def add_event(self, task_id, event, at):
        with self._lock:
            record = self._live(task_id)
            if record is None:
                return
            self._events[task_id].append((event, at))
            record.update(status=event, last_activity=at)

    def events(self, task_id):
        with self._lock:
            return list(self._events.get(task_id, ()))

    def mark_served(self, task_id, page, rows):
        with self._lock:
            record = self._live(task_id)
            if record is None or f"served:{page}" in record:
                return False
            record[f"served:{page}"] = rows
            record["accumulate"] = record.get("accumulate", 0) + rows
            if page >= record.get("served", 0):
                record.update(served=page, metric=rows)
            return True

    def put_page(self, task_id, page, body, ttl_s):
        with self._lock:
            record = self._live(task_id)
            if record is None or (task_id, page) in self._pages:
                return False
            self._pages[(task_id, page)] = body
            record[f"size:{page}"] = len(body)
            record["cached_bytes"] = record.get("cached_bytes", 0) + len(body)
            record["fetched"] = max(record.get("fetched", 0), page)
            return True

    def get_page(self, task_id, page):
        with self._lock:
            return self._pages.get((task_id, page)) if self._live(task_id) is not None else None

    def drop_pages(self, task_id, pages):
        with self._lock:
            record = self._records.get(task_id)
            for page in pages:
                if self._pages.pop((task_id, page), None) is not None and record is not None:
                    record["cached_bytes"] -= record.pop(f"size:{page}", 0)

    def task_ids(self):
        with self._lock:
            return [t for t in list(self._records) if self._live(t) is not None]

    def delete(self, task_id):
        with self._lock:
            self._records.pop(task_id, None)
            self._events.pop(task_id, None)
            self._expires.pop(task_id, None)
            for key in [k for k in self._pages if k[0] == task_id]:
                del self._pages[key]

    def acquire(self, task_id, ttl_s):
        with self._lock:
            held = self._locks.get(task_id)
            if held is not None and held[1] > self._monotonic():
                return None
            owner = secrets.token_hex(8)
            self._locks[task_id] = (owner, self._monotonic() + ttl_s)
            return owner

    def release(self, task_id, owner):
        with self._lock:
            if self._locks.get(task_id, (None,))[0] == owner:
                del self._locks[task_id]

    def secret(self):
        return self._secret

    def close(self):
        pass


# Atomic steps in Redis (one script each: no other client sees half of one).
_MARK_SERVED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HSETNX', KEYS[1], 'served:' .. ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'accumulate', ARGV[2])
local served = tonumber(redis.call('HGET', KEYS[1], 'served') or '0')
if tonumber(ARGV[1]) >= served then
  redis.call('HSET', KEYS[1], 'served', ARGV[1], 'metric', ARGV[2])
end
return 1
"""
_PUT_PAGE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) == false then return 0 end
local size = string.len(ARGV[2])
redis.call('HSET', KEYS[1], 'size:' .. ARGV[1], size)
redis.call('HINCRBY', KEYS[1], 'cached_bytes', size)
local fetched = tonumber(redis.call('HGET', KEYS[1], 'fetched') or '0')
if tonumber(ARGV[1]) > fetched then redis.call('HSET', KEYS[1], 'fetched', ARGV[1]) end
return 1
"""
_DROP_PAGES = """
for i, page in ipairs(ARGV) do
  local size = redis.call('HGET', KEYS[1], 'size:' .. page)
  if size then
    redis.call('DEL', KEYS[2] .. page)
    redis.call('HDEL', KEYS[1], 'size:' .. page)
    redis.call('HINCRBY', KEYS[1], 'cached_bytes', -tonumber(size))
  end
end
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _ms(ttl_s: float) -> int:
    return max(1000, int(ttl_s * 1000))


class RedisStore:
    """Tasks in Redis under ``{prefix}export:``. Every Redis failure is StoreUnavailable."""

    def __init__(self, url: str, prefix: str, timeout_s: float = 2.0, secret: bytes | None = None):
        try:
            self._client = redis.Redis.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
            )
        except ValueError as exc:
            raise ConfigurationError(f"REDIS_URL: {exc}") from None
        self._where = safe_url(url)
        self._prefix = f"{prefix}export:"
        self._configured_secret = secret
        self._secret: bytes | None = None
        self._scripts = {
            name: self._client.register_script(text)
            for name, text in (
                ("mark_served", _MARK_SERVED),
                ("put_page", _PUT_PAGE),
                ("drop_pages", _DROP_PAGES),
                ("release", _RELEASE),
            )
        }

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RedisError as exc:
            raise StoreUnavailable(
                f"the export cache (Redis at {self._where}) is unavailable: {exc}"
            ) from None

    def _task(self, task_id: str) -> str:
        return f"{self._prefix}task:{task_id}"

    def _page(self, task_id: str, page: int | str = "") -> str:
        return f"{self._prefix}page:{task_id}:{page}"

    def _keys(self, task_id: str) -> list[str]:
        return [self._task(task_id), f"{self._task(task_id)}:events"]

    @property
    def _ids(self) -> str:
        return f"{self._prefix}tasks"

    def create(self, task_id, record, ttl_s):
        def run():
            pipe = self._client.pipeline()
            pipe.hset(self._task(task_id), mapping={k: json.dumps(v) for k, v in record.items()})
            for key in self._keys(task_id)[:1]:
                pipe.pexpire(key, _ms(ttl_s))
            pipe.sadd(self._ids, task_id)
            pipe.execute()

        self._call(run)

    def get(self, task_id):
        raw = self._call(self._client.hgetall, self._task(task_id))
        if not raw:
            return None
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    def update(self, task_id, fields, ttl_s=None):
        def run():
            if not self._client.exists(self._task(task_id)):
                return
            pipe = self._client.pipeline()
            pipe.hset(self._task(task_id), mapping={k: json.dumps(v) for k, v in fields.items()})
            if ttl_s is not None:
                for key in self._keys(task_id):
                    pipe.pexpire(key, _ms(ttl_s))
                record_pages = self._client.hkeys(self._task(task_id))
                for name in record_pages:
                    if name.startswith(b"size:"):
                        pipe.pexpire(self._page(task_id, name[5:].decode()), _ms(ttl_s))
            pipe.execute()

        self._call(run)

    def add_event(self, task_id, event, at):
        def run():
            if not self._client.exists(self._task(task_id)):
                return
            pipe = self._client.pipeline()
            pipe.rpush(f"{self._task(task_id)}:events", json.dumps([event, at]))
            ttl_ms = max(1000, self._client.pttl(self._task(task_id)))
            pipe.pexpire(f"{self._task(task_id)}:events", ttl_ms)
            pipe.hset(
                self._task(task_id),
                mapping={"status": json.dumps(event), "last_activity": json.dumps(at)},
            )
            pipe.execute()

        self._call(run)

    def events(self, task_id):
        raw = self._call(self._client.lrange, f"{self._task(task_id)}:events", 0, -1)
        return [tuple(json.loads(r)) for r in raw]

    def mark_served(self, task_id, page, rows):
        script = self._scripts["mark_served"]
        return bool(self._call(script, keys=[self._task(task_id)], args=[page, rows]))

    def put_page(self, task_id, page, body, ttl_s):
        script = self._scripts["put_page"]
        keys = [self._task(task_id), self._page(task_id, page)]
        return bool(self._call(script, keys=keys, args=[page, body, _ms(ttl_s)]))

    def get_page(self, task_id, page):
        return self._call(self._client.get, self._page(task_id, page))

    def drop_pages(self, task_id, pages):
        pages = [str(p) for p in pages]
        if pages:
            keys = [self._task(task_id), self._page(task_id)]
            self._call(self._scripts["drop_pages"], keys=keys, args=pages)

    def task_ids(self):
        def run():
            ids = [i.decode() for i in self._client.smembers(self._ids)]
            pipe = self._client.pipeline()
            for task_id in ids:
                pipe.exists(self._task(task_id))
            alive = pipe.execute()
            dead = [t for t, ok in zip(ids, alive, strict=True) if not ok]
            if dead:
                self._client.srem(self._ids, *dead)
            return [t for t, ok in zip(ids, alive, strict=True) if ok]

        return self._call(run)

    def delete(self, task_id):
        def run():
            sizes = [k for k in self._client.hkeys(self._task(task_id)) if k.startswith(b"size:")]
            keys = [*self._keys(task_id), *(self._page(task_id, k[5:].decode()) for k in sizes)]
            self._client.delete(*keys)
            self._client.srem(self._ids, task_id)

        self._call(run)

    def acquire(self, task_id, ttl_s):
        owner = secrets.token_hex(8)
        ok = self._call(
            self._client.set, f"{self._task(task_id)}:lock", owner, nx=True, px=_ms(ttl_s)
        )
        return owner if ok else None

    def release(self, task_id, owner):
        self._call(self._scripts["release"], keys=[f"{self._task(task_id)}:lock"], args=[owner])

    def secret(self):
        """The configured secret, else one shared by every process on this Redis."""
        if self._configured_secret is not None:
            return self._configured_secret
        if self._secret is None:
            key = f"{self._prefix}secret"
            self._call(self._client.set, key, secrets.token_hex(32), nx=True)
            self._secret = bytes.fromhex(self._call(self._client.get, key).decode())
        return self._secret

    def close(self):
        self._client.close()
