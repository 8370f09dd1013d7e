"""A read-through Redis cache for the reference data (MetricType, TimeStampType).

The cache is an optimisation, never a dependency: when Redis is not configured, down, slow or
holds something unreadable, values come from the loader (the warehouse). Short socket timeouts and
a pause after a failure keep a dead Redis from slowing requests.
"""

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from metrics_pipeline.resources.engines import ConfigurationError, safe_url

log = logging.getLogger(__name__)

HIT, MISS, UNAVAILABLE, DISABLED = "hit", "miss", "unavailable", "disabled"


class MetadataCache:
    """JSON values under ``{prefix}{warehouse digest}:{name}``, kept ``ttl_s`` seconds."""

    def __init__(
        self,
        redis_url: str | None,
        prefix: str,
        ttl_s: int,
        namespace: str,
        timeout_s: float = 0.2,
        retry_after_s: float = 30.0,
    ):
        self.ttl_s = ttl_s
        self.retry_after_s = retry_after_s
        # Different warehouses sharing one Redis must not read each other's entries.
        self.prefix = f"{prefix}{hashlib.sha256(namespace.encode()).hexdigest()[:12]}:"
        self._down_until = 0.0
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        if redis_url:
            try:
                self._client = redis.Redis.from_url(
                    redis_url,
                    socket_timeout=timeout_s,
                    socket_connect_timeout=timeout_s,
                    retry=Retry(NoBackoff(), 0),
                    retry_on_timeout=False,
                    health_check_interval=0,
                )
            except ValueError as exc:
                raise ConfigurationError(f"REDIS_URL: {exc}") from None
            self._where = safe_url(redis_url)

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def _usable(self) -> bool:
        return self._client is not None and time.monotonic() >= self._down_until

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            first = time.monotonic() >= self._down_until
            self._down_until = time.monotonic() + self.retry_after_s
        if first:
            log.warning(
                "Redis at %s unavailable (%s); reading the warehouse for %ss",
                self._where,
                exc,
                self.retry_after_s,
            )

    def get_or_load(self, name: str, loader: Callable[[], Any]) -> tuple[Any, str]:
        """The cached value of ``name``, or ``loader()`` stored for next time; and how it came."""
        if self._client is None:
            return loader(), DISABLED
        if not self._usable():
            return loader(), UNAVAILABLE
        try:
            raw = self._client.get(self.key(name))
        except RedisError as exc:
            self._failed(exc)
            return loader(), UNAVAILABLE
        if raw is not None:
            try:
                return json.loads(raw), HIT
            except ValueError:
                log.warning("unreadable cache entry %s replaced", self.key(name))
        value = loader()
        try:
            self._client.set(self.key(name), json.dumps(value), ex=self.ttl_s)
        except RedisError as exc:
            self._failed(exc)
        return value, MISS

    def status(self) -> str:
        """``disabled``, ``ok`` or ``unavailable`` (a ping, skipped while Redis is known down)."""
        if self._client is None:
            return DISABLED
        if not self._usable():
            return UNAVAILABLE
        try:
            self._client.ping()
        except RedisError as exc:
            self._failed(exc)
            return UNAVAILABLE
        return "ok"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
