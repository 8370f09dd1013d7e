"""The consumer: a durable JetStream pull consumer that writes each data point into
``CollectedMetric`` (idempotent on (MessageId, MetricKey)) and acknowledges a message only
after the transaction holding its rows has committed. Killed at any moment it loses nothing
(unacknowledged messages are redelivered) and stores nothing twice (the insert skips rows
already there). Several processes with the same durable name share the work."""

import asyncio
import logging
import signal
from dataclasses import dataclass, field

from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from sqlalchemy.exc import SQLAlchemyError

from metrics_pipeline.collected.bus import (
    connect,
    consumer_config,
    decode_rows,
    ensure_stream,
)
from metrics_pipeline.collected.settings import CollectedSettings
from metrics_pipeline.collected.store import CollectedStore
from metrics_pipeline.resources.engines import describe_db_error

log = logging.getLogger(__name__)


class ConsumerMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "consumer_messages", "Bus messages written and acknowledged", registry=self.registry
        )
        self.inserted = Counter(
            "consumer_points_inserted", "Rows inserted into CollectedMetric", registry=self.registry
        )
        self.duplicates = Counter(
            "consumer_points_duplicate",
            "Rows skipped because they were already stored (redeliveries, retries)",
            registry=self.registry,
        )
        self.poison = Counter(
            "consumer_messages_undecodable",
            "Messages dropped as undecodable",
            registry=self.registry,
        )
        self.lag = Gauge(
            "consumer_lag_messages",
            "Messages in the stream not yet delivered to the durable consumer",
            registry=self.registry,
        )
        self.ack_pending = Gauge(
            "consumer_ack_pending",
            "Messages delivered, not yet acknowledged",
            registry=self.registry,
        )


@dataclass
class ConsumeResult:
    messages: int = 0
    inserted: int = 0
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)


async def consume(
    settings: CollectedSettings,
    store: CollectedStore,
    once: bool = False,
    stop: asyncio.Event | None = None,
    metrics: ConsumerMetrics | None = None,
) -> ConsumeResult:
    """Write bus messages into the raw table until ``stop`` is set (or, with ``once``, until the
    stream has nothing more to deliver)."""
    stop = stop or asyncio.Event()
    metrics = metrics or ConsumerMetrics()
    result = ConsumeResult()
    await asyncio.to_thread(store.ensure_schema)
    nc = await connect(settings, "metrics-consumer")
    try:
        js = nc.jetstream()
        await ensure_stream(js, settings)
        sub = await js.pull_subscribe(
            f"{settings.stream}.>",
            durable=settings.consumer_name,
            stream=settings.stream,
            config=consumer_config(settings),
        )
        # One batch is written (in a thread) while the next is fetched and decoded; a batch is
        # acknowledged once its own transaction has committed.
        writing: asyncio.Task | None = None
        while not stop.is_set():
            try:
                msgs = await sub.fetch(settings.fetch_batch, timeout=1.0)
            except (NatsTimeout, TimeoutError):
                # nats-py raises either, depending on where the wait ran out.
                if writing is not None:
                    await writing
                    writing = None
                info = await _update_lag(sub, metrics)
                # --once drains everything: also what a killed member left unacknowledged
                # (redelivered once its ack wait runs out).
                if once and info is not None and not info.num_pending and not info.num_ack_pending:
                    break
                continue
            except NatsError as exc:
                log.warning("consumer: bus error: %s", exc)
                await asyncio.sleep(0.5)
                continue
            rows, good = await _decode(msgs, metrics)
            if writing is not None:
                await writing
            writing = asyncio.create_task(_write(rows, good, store, metrics, result))
        if writing is not None:
            await writing
        try:
            await nc.flush(timeout=5)  # the last acknowledgements leave before we close
        except (NatsError, TimeoutError):
            log.warning("consumer: bus gone at exit; unacknowledged messages are redelivered")
    finally:
        await nc.close()
    return result


async def _decode(msgs, metrics: ConsumerMetrics) -> tuple[list[dict], list]:
    """The rows of the messages, and the messages they came from (undecodable ones are
    dropped: they could never be written)."""
    rows, good = [], []
    for msg in msgs:
        try:
            rows.extend(decode_rows(msg.data))
            good.append(msg)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("consumer: dropping undecodable message %s: %s", msg.metadata.sequence, exc)
            metrics.poison.inc()
            await msg.term()
    return rows, good


async def _write(rows, good, store: CollectedStore, metrics: ConsumerMetrics, result) -> None:
    try:
        inserted = await asyncio.to_thread(store.insert_points, rows)
    except SQLAlchemyError as exc:
        # Not acknowledged: the bus redelivers after a short delay.
        message = (
            f"warehouse error, {len(good)} messages to be redelivered: {describe_db_error(exc)}"
        )
        log.error("consumer: %s", message)
        result.errors.append(message)
        for msg in good:
            await msg.nak(delay=2)
        await asyncio.sleep(1)
        return
    for msg in good:
        await msg.ack()
    metrics.messages.inc(len(good))
    metrics.inserted.inc(inserted)
    metrics.duplicates.inc(len(rows) - inserted)
    result.messages += len(good)
    result.inserted += inserted
    result.duplicates += len(rows) - inserted


async def _update_lag(sub, metrics: ConsumerMetrics):
    """The durable consumer's info (None when the bus does not answer), into the metrics."""
    try:
        info = await sub.consumer_info()
    except (TimeoutError, NatsError):
        return None
    metrics.lag.set(info.num_pending or 0)
    metrics.ack_pending.set(info.num_ack_pending or 0)
    return info


def run_consumer(
    settings: CollectedSettings, store: CollectedStore, once: bool, metrics_port: int
) -> ConsumeResult:
    """The ``consumer`` command: runs until SIGTERM/SIGINT (or drains once)."""
    metrics = ConsumerMetrics()
    if metrics_port and not once:
        start_http_server(metrics_port, addr="0.0.0.0", registry=metrics.registry)

    async def main() -> ConsumeResult:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await consume(settings, store, once, stop, metrics)

    return asyncio.run(main())
