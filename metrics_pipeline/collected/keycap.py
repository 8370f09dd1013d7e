"""The cap on distinct keys per app (METRICS_COLLECTOR_MAX_KEYS_PER_APP).

Each app's keys live in one entry of a JetStream key-value bucket (``<stream>_KEYS``), updated
by compare-and-set, so that every collector process sharing the bus enforces one cap exactly.
Keys are never removed, so a collector's cached copy is a subset of the truth: a request whose
keys it already knows needs no bus round trip."""

import asyncio
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from metrics_pipeline.collected.rules import Item

#: Attempts of a compare-and-set before the request is answered 503 (heavy contention), and
#: the longest pause (jittered, growing) before attempt n: n x CAS_PAUSE_S.
CAS_ATTEMPTS = 50
CAS_PAUSE_S = 0.005


def cap_message(app: str, cap: int, refused: int) -> str:
    """What a refusal says: the app, the cap and its setting, how many new keys were refused."""
    return (
        f"app {app!r}: at most {cap} distinct keys per app (METRICS_COLLECTOR_MAX_KEYS_PER_APP); "
        f"{refused} new key{'' if refused == 1 else 's'} refused, known keys still accepted"
    )


class KeyCapReached(Exception):
    """An app would exceed its distinct keys: the request is refused (429)."""

    def __init__(self, app: str, cap: int, known: int, new: int):
        super().__init__(cap_message(app, cap, new) + f" (it has {known})")


def keys_by_app(items: Iterable[Item]) -> dict[str, frozenset[str]]:
    """The keys each app's items carry."""
    out: dict[str, set[str]] = {}
    for item in items:
        out.setdefault(item.app, set()).update(item.metrics)
    return {app: frozenset(keys) for app, keys in out.items()}


def admit(
    app: str, known: frozenset[str], wanted: frozenset[str], cap: int, partial: bool = False
) -> frozenset[str]:
    """The app's keys once ``wanted`` are added; beyond ``cap``, KeyCapReached, or with
    ``partial`` the new keys that fit (in sorted order) are added and the others left out."""
    new = wanted - known
    room = cap - len(known)
    if len(new) <= room:
        return known | new
    if not partial:
        raise KeyCapReached(app, cap, len(known), len(new))
    return known | frozenset(sorted(new)[: max(room, 0)])


def encode_keys(keys: Iterable[str]) -> bytes:
    return "\n".join(sorted(keys)).encode()


def decode_keys(value: bytes | None) -> frozenset[str]:
    return frozenset(value.decode().split("\n")) if value else frozenset()


def entry_name(app: str) -> str:
    """The bucket key of an app (hex: any app name is a valid key)."""
    return f"app.{app.encode().hex()}"


def bucket_name(stream: str) -> str:
    return f"{stream}_KEYS"


async def open_bucket(js: JetStreamContext, stream: str) -> KeyValue:
    name = bucket_name(stream)
    try:
        return await js.key_value(name)
    except BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(bucket=name, history=1, storage=StorageType.FILE)
        )


@dataclass
class KeyRegistry:
    """The apps' known keys: the bucket, and this process's copy of it."""

    kv: KeyValue
    cap: int
    known: dict[str, frozenset[str]] = field(default_factory=dict)
    #: One update per app at a time in this process (compare-and-set races only across them).
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def check(self, items: Sequence[Item], partial: bool = False) -> dict[str, frozenset]:
        """Register the items' new keys; beyond the cap KeyCapReached, or with ``partial`` the
        keys refused per app (those that did not fit). NatsError when the bus fails."""
        refused = {}
        for app, wanted in keys_by_app(items).items():
            if not wanted <= self.known.get(app, frozenset()):
                async with self.locks.setdefault(app, asyncio.Lock()):
                    if not wanted <= self.known.get(app, frozenset()):
                        self.known[app] = await self._register(app, wanted, partial)
            left = wanted - self.known[app] if app in self.known else frozenset()
            if left:
                refused[app] = left
        return refused

    async def _register(self, app: str, wanted: frozenset[str], partial: bool) -> frozenset[str]:
        name = entry_name(app)
        for attempt in range(CAS_ATTEMPTS):
            if attempt:  # lost a race: let the winner's neighbours go first
                await asyncio.sleep(random.uniform(0, attempt * CAS_PAUSE_S))
            try:
                entry = await self.kv.get(name)
                known, revision = decode_keys(entry.value), entry.revision
            except KeyNotFoundError:
                known, revision = frozenset(), None
            if wanted <= known:
                return known
            try:
                keys = admit(app, known, wanted, self.cap, partial)
            except KeyCapReached:
                self.known[app] = known
                raise
            if keys == known:
                return known  # nothing of wanted fits
            try:
                if revision is None:
                    await self.kv.create(name, encode_keys(keys))
                else:
                    await self.kv.update(name, encode_keys(keys), last=revision)
                return keys
            except KeyWrongLastSequenceError:
                continue  # another collector changed the entry first: read it again
            except NatsError as exc:
                if "wrong last sequence" in str(exc):
                    continue
                raise
        raise NatsError(f"the key registry of app {app!r} stays contended")
