"""The message bus: a NATS JetStream stream with file storage, limits that reject new messages
when full, and the ``Nats-Msg-Id`` duplicate window. One stream per ``METRICS_BUS_STREAM``,
owning the subjects ``<stream>.>``, so deployments and test runs can share a server."""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, NotFoundError

from metrics_pipeline.collected.keycap import KeyRegistry, open_bucket
from metrics_pipeline.collected.rules import Item, message_id
from metrics_pipeline.collected.settings import CollectedSettings

#: JetStream's error code for a stream at one of its limits (messages, bytes).
STREAM_FULL = 10077
#: Bytes of a message's maximum size kept for its headers.
HEADER_ROOM = 4096


class BusFull(RuntimeError):
    """The stream is at its limits: the message was not stored."""


class BusUnavailable(RuntimeError):
    """The bus did not answer (down, no JetStream, timeout): the message was not stored."""


async def connect(settings: CollectedSettings, name: str) -> Client:
    """A connection that reconnects for ever; BusUnavailable when the first attempt fails."""
    try:
        return await nats.connect(
            settings.bus_url,
            name=name,
            connect_timeout=2,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
        )
    except (TimeoutError, OSError, NatsError) as exc:
        reason = str(exc) or type(exc).__name__
        raise BusUnavailable(f"bus unreachable at {settings.bus_url}: {reason}") from None


def stream_config(settings: CollectedSettings) -> StreamConfig:
    return StreamConfig(
        name=settings.stream,
        subjects=[f"{settings.stream}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_bytes=settings.stream_max_bytes,
        max_msgs=settings.stream_max_msgs,
        max_age=settings.stream_max_age_s,
        duplicate_window=settings.duplicate_window_s,
        num_replicas=settings.stream_replicas,
    )


async def ensure_stream(js: JetStreamContext, settings: CollectedSettings) -> None:
    """Create the stream, or bring an existing one to the configured limits."""
    config = stream_config(settings)
    try:
        await js.stream_info(settings.stream)
    except NotFoundError:
        await js.add_stream(config)
        return
    await js.update_stream(config)


def encode(items: Sequence[Item], received_at: datetime) -> bytes:
    """One bus message for one request's items (the consumer writes them in one transaction)."""
    return json.dumps(
        {
            "received": received_at.isoformat(),
            "items": [
                {"m": message_id(i), "a": i.app, "t": i.time.isoformat(), "v": i.metrics}
                for i in items
            ],
        },
        separators=(",", ":"),
    ).encode()


def encode_chunks(
    items: Sequence[Item], received_at: datetime, max_bytes: int
) -> list[tuple[bytes, Sequence[Item]]]:
    """The messages of a request: one, or halves of it until each fits the bus's largest
    message (``max_bytes``), each with the items it carries."""
    payload = encode(items, received_at)
    if len(payload) <= max_bytes or len(items) == 1:
        return [(payload, items)]
    mid = len(items) // 2
    return encode_chunks(items[:mid], received_at, max_bytes) + encode_chunks(
        items[mid:], received_at, max_bytes
    )


def decode_rows(payload: bytes) -> list[dict]:
    """The CollectedMetric rows of one bus message."""
    body = json.loads(payload)
    received = datetime.fromisoformat(body["received"])
    rows = []
    for item in body["items"]:
        collected = datetime.fromisoformat(item["t"])
        for key, value in item["v"].items():
            rows.append(
                {
                    "MessageId": item["m"],
                    "MetricKey": key,
                    "App": item["a"],
                    "Value": float(value),
                    "CollectedAt": collected,
                    "ReceivedAt": received,
                }
            )
    return rows


def dedup_id(items: Sequence[Item]) -> str | None:
    """The ``Nats-Msg-Id`` of a request: its single item's MessageId, so that a client retry of
    the same ``id`` is stored once by the bus (the raw table's key dedups everything else)."""
    return message_id(items[0]) if len(items) == 1 else None


@dataclass
class Publisher:
    """Publishes to the stream and waits for its acknowledgement (stored on disk)."""

    nc: Client
    js: JetStreamContext
    settings: CollectedSettings
    #: The apps' known keys (None: no cap).
    registry: KeyRegistry | None = None

    @classmethod
    async def open(cls, settings: CollectedSettings) -> "Publisher":
        nc = await connect(settings, "metrics-collector")
        js = nc.jetstream(timeout=settings.publish_timeout_s)
        registry = None
        try:
            await ensure_stream(js, settings)
            if settings.max_keys_per_app:
                kv = await open_bucket(js, settings.stream)
                registry = KeyRegistry(kv, settings.max_keys_per_app)
        except (TimeoutError, NatsError) as exc:
            await nc.close()
            raise BusUnavailable(
                f"bus at {settings.bus_url}: JetStream not available: {exc}"
            ) from None
        return cls(nc, js, settings, registry)

    async def register_keys(self, items: Sequence[Item], partial: bool = False) -> dict:
        """Record the items' new keys per app: beyond the cap KeyCapReached, or with
        ``partial`` the keys refused per app."""
        if self.registry is None:
            return {}
        if not self.nc.is_connected:
            raise BusUnavailable("bus disconnected")
        try:
            return await self.registry.check(items, partial)
        except (TimeoutError, NatsError) as exc:
            raise BusUnavailable(f"bus key registry: {exc or type(exc).__name__}") from None

    async def publish(self, payload: bytes, msg_id: str | None) -> bool:
        """Store one message; True when the bus already had this ``msg_id`` (a retry)."""
        if not self.nc.is_connected:
            # While reconnecting, a publish would sit in the client's buffer: fail fast instead.
            raise BusUnavailable("bus disconnected")
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        try:
            ack = await self.js.publish(
                self.settings.subject,
                payload,
                timeout=self.settings.publish_timeout_s,
                headers=headers,
            )
        except APIError as exc:
            if exc.err_code == STREAM_FULL:
                raise BusFull(exc.description or "stream full") from None
            raise BusUnavailable(f"bus refused the message: {exc.description or exc}") from None
        except (TimeoutError, NatsError) as exc:
            raise BusUnavailable(f"bus did not answer: {exc or type(exc).__name__}") from None
        return bool(ack.duplicate)

    def max_payload(self) -> int:
        """The largest message the server takes, less room for the headers."""
        return max(self.nc.max_payload - HEADER_ROOM, HEADER_ROOM)

    def connected(self) -> bool:
        return self.nc.is_connected

    async def close(self) -> None:
        await self.nc.close()


def consumer_config(settings: CollectedSettings) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=settings.consumer_name,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_s,
        max_ack_pending=max(settings.fetch_batch * 4, 1000),
        filter_subject=f"{settings.stream}.>",
    )
