"""The collector: an async HTTP service that validates data points and answers 202 only once
the bus has stored them.

- ``GET /collect?app=APP&data=JSON[&time=ISO][&id=ID]`` (the seed's form) and
  ``POST /collect`` with one ``{"app", "time"?, "id"?, "metrics": {...}}`` object or a list.
- ``POST /v1/metrics``: OTLP/HTTP, protobuf or JSON, gzip or not (:mod:`.otlp`); 200 with
  ``partial_success`` once stored, errors as a google.rpc.Status.
- 400 naming the bad field; 413 for a body or batch over the limits; 401/403 for API keys;
  429 (bus full) or 503 (bus unreachable) with ``Retry-After``; 429 naming the cap for new
  keys of an app beyond METRICS_COLLECTOR_MAX_KEYS_PER_APP (:mod:`.keycap`).
- ``/metrics`` (Prometheus), ``/healthz`` (live), ``/readyz`` (bus connected).
"""

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from contextlib import asynccontextmanager
from datetime import timedelta

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from metrics_pipeline.clock import utc_now
from metrics_pipeline.collected import otlp
from metrics_pipeline.collected.auth import AppKey, find_key, load_app_keys
from metrics_pipeline.collected.bus import (
    BusFull,
    BusUnavailable,
    Publisher,
    dedup_id,
    encode_chunks,
)
from metrics_pipeline.collected.keycap import KeyCapReached, cap_message
from metrics_pipeline.collected.rules import BadPoint, Item, validate_item
from metrics_pipeline.collected.settings import CollectedSettings
from metrics_pipeline.web.auth import bearer_token
from metrics_pipeline.web.hosts import is_loopback
from metrics_pipeline.web.middleware import DrainedBodies

log = logging.getLogger(__name__)


class Rejected(Exception):
    def __init__(self, status: int, reason: str, message: str, headers: Mapping | None = None):
        super().__init__(message)
        self.status, self.reason, self.message, self.headers = status, reason, message, headers


class CollectorMetrics:
    """The collector's Prometheus metrics, in a registry of its own (one per app object)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.accepted = Counter(
            "collector_points_accepted", "Data points stored on the bus", registry=self.registry
        )
        self.rejected = Counter(
            "collector_requests_rejected",
            "Requests answered with an error, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "collector_bus_publish_seconds",
            "Time until the bus acknowledged a message",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )


class Collector:
    """State of one collector process: settings, keys, the publisher (None while the bus is
    unreachable; a background task keeps trying) and metrics."""

    def __init__(self, settings: CollectedSettings):
        self.settings = settings
        self.keys = load_app_keys(settings.tokens_file) if settings.tokens_file else None
        self.metrics = CollectorMetrics()
        self.publisher: Publisher | None = None
        self._connecting: asyncio.Task | None = None

    async def start(self) -> None:
        self._connecting = asyncio.create_task(self._connect_loop())

    async def _connect_loop(self) -> None:
        while self.publisher is None:
            try:
                self.publisher = await Publisher.open(self.settings)
                log.info("collector: bus connected at %s", self.settings.bus_url)
            except BusUnavailable as exc:
                log.warning("collector: %s; retrying", exc)
                await asyncio.sleep(1)

    async def stop(self) -> None:
        if self._connecting:
            self._connecting.cancel()
        if self.publisher:
            await self.publisher.close()

    # --- request handling -----------------------------------------------------------------------

    def authenticate(self, request: Request) -> AppKey | None:
        """The caller's key (None in open mode, loopback clients only), before any parsing."""
        if self.keys is None:
            client = request.client.host if request.client else ""
            if not is_loopback(client):
                raise Rejected(
                    401, "auth", "no collector keys configured: this server serves loopback only"
                )
            return None
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            raise Rejected(401, "auth", "missing API key (Authorization: Bearer <key>)")
        key = find_key(self.keys, token)
        if key is None:
            raise Rejected(401, "auth", "unknown API key")
        return key

    @staticmethod
    def authorize(key: AppKey | None, items: list[Item]) -> None:
        denied = sorted({i.app for i in items if key is not None and not key.may_send(i.app)})
        if denied:
            raise Rejected(403, "forbidden", f"app: this key may not send for app {denied[0]!r}")

    def validate(self, raws: list, batch: bool, default_app=None, field="metrics") -> list[Item]:
        s = self.settings
        now = utc_now()
        past, future = timedelta(seconds=s.max_past_s), timedelta(seconds=s.max_future_s)
        items = []
        points = 0
        for i, raw in enumerate(raws):
            where = f"[{i}]" if batch else ""
            item = validate_item(raw, where, now, past, future, default_app, field)
            points += len(item.metrics)
            self.check_points(points)
            items.append(item)
        if not items:
            raise BadPoint("body", "an empty batch")
        return items

    async def store(self, key: AppKey | None, items: list[Item]) -> Response:
        points, messages, duplicate = await self.publish(key, items)
        return JSONResponse(
            {"accepted": points, "messages": messages, "duplicate": duplicate}, status_code=202
        )

    async def publish(self, key: AppKey | None, items: list[Item]) -> tuple[int, int, bool]:
        """Store the items on the bus (one message, or several when one would exceed the bus's
        largest message); (points, items, duplicate) once every message is acknowledged."""
        self.authorize(key, items)
        await self.register_keys(items)
        publisher = self.publisher
        retry = {"Retry-After": str(self.settings.retry_after_s)}
        duplicate = False
        for payload, chunk in encode_chunks(items, utc_now(), publisher.max_payload()):
            started = time.perf_counter()
            try:
                duplicate = await publisher.publish(payload, dedup_id(chunk))
            except BusFull as exc:
                raise Rejected(
                    429, "bus_full", f"the bus is full ({exc}); retry later", retry
                ) from None
            except BusUnavailable as exc:
                raise Rejected(503, "bus_unavailable", f"{exc}; retry later", retry) from None
            self.metrics.publish_seconds.observe(time.perf_counter() - started)
        points = sum(len(i.metrics) for i in items)
        self.metrics.accepted.inc(points)
        return points, len(items), duplicate

    async def register_keys(self, items: list[Item], partial: bool = False) -> dict:
        """The items' new keys registered (the cap): 429 beyond it, or with ``partial`` the
        keys refused per app; 503 while the bus is unreachable."""
        retry = {"Retry-After": str(self.settings.retry_after_s)}
        if self.publisher is None:
            raise Rejected(503, "bus_unavailable", "the bus is unreachable; retry later", retry)
        try:
            return await self.publisher.register_keys(items, partial)
        except KeyCapReached as exc:
            raise Rejected(429, "key_cap", str(exc)) from None
        except BusUnavailable as exc:
            raise Rejected(503, "bus_unavailable", f"{exc}; retry later", retry) from None

    async def read_body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise Rejected(413, "too_large", f"body: more than {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Rejected(413, "too_large", f"body: more than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def check_points(self, points: int) -> None:
        if points > self.settings.max_points:
            raise Rejected(
                413, "too_large", f"batch: more than {self.settings.max_points} data points"
            )

    async def otlp_export(self, request: Request, fmt: str) -> Response:
        """``POST /v1/metrics``: 200 with the partial success once every point is stored."""
        key = self.authenticate(request)
        try:
            body = otlp.decompress(
                await self.read_body(request),
                request.headers.get("content-encoding"),
                self.settings.max_body_bytes,
            )
        except OverflowError as exc:
            raise Rejected(413, "too_large", str(exc)) from None
        s = self.settings
        translation = otlp.translate(
            otlp.parse_request(body, fmt),
            utc_now(),
            timedelta(seconds=s.max_past_s),
            timedelta(seconds=s.max_future_s),
        )
        self.check_points(translation.points)
        if translation.items:
            # Points of keys beyond an app's cap are rejected points; when nothing else is
            # left, the request is a 429 naming the cap.
            self.authorize(key, translation.items)
            refused = await self.register_keys(translation.items, partial=True)
            for app, keys in refused.items():
                cap = self.settings.max_keys_per_app
                translation.drop_keys(app, keys, cap_message(app, cap, len(keys)))
            if not translation.items:
                raise Rejected(429, "key_cap", translation.message())
            await self.publish(key, translation.items)
        if translation.rejected:
            self.metrics.rejected.labels("otlp_points").inc(translation.rejected)
        return Response(otlp.response_body(translation, fmt), media_type=fmt)


def _parse_json(text: str | bytes, field: str):
    try:
        return json.loads(text)
    except ValueError:
        raise BadPoint(field, "not JSON") from None
    except RecursionError:  # the parser's depth cap; a valid body is 3 levels deep
        raise BadPoint(field, "JSON nested too deeply") from None


def create_collector_app(settings: CollectedSettings) -> Starlette:
    """The collector's ASGI app (connects to the bus when it starts, not when built)."""
    collector = Collector(settings)

    async def handle(request: Request, work, fmt: str | None = None) -> Response:
        """The answer of ``work``, or its error: ``{"detail", "field"?}``, or for OTLP (``fmt``)
        a google.rpc.Status in the request's format."""
        try:
            return await work()
        except BadPoint as exc:
            collector.metrics.rejected.labels("invalid").inc()
            if fmt:
                return Response(otlp.status_body(400, str(exc), fmt), 400, media_type=fmt)
            return JSONResponse({"detail": str(exc), "field": exc.field}, status_code=400)
        except Rejected as exc:
            collector.metrics.rejected.labels(exc.reason).inc()
            if fmt:
                body = otlp.status_body(exc.status, exc.message, fmt)
                return Response(body, exc.status, headers=exc.headers, media_type=fmt)
            return JSONResponse(
                {"detail": exc.message}, status_code=exc.status, headers=exc.headers
            )

    async def collect_get(request: Request) -> Response:
        async def work():
            key = collector.authenticate(request)
            q = request.query_params
            if "data" not in q:
                raise BadPoint("data", "missing (a URL-encoded JSON object of key -> number)")
            raw = {"metrics": _parse_json(q["data"], "data"), "time": q.get("time")}
            if "id" in q:
                raw["id"] = q["id"]
            items = collector.validate([raw], False, q.get("app"), field="data")
            return await collector.store(key, items)

        return await handle(request, work)

    async def collect_post(request: Request) -> Response:
        async def work():
            key = collector.authenticate(request)
            body = _parse_json(await collector.read_body(request), "body")
            batch = isinstance(body, list)
            return await collector.store(key, collector.validate(body if batch else [body], batch))

        return await handle(request, work)

    async def otlp_metrics(request: Request) -> Response:
        fmt = otlp.content_format(request.headers.get("content-type"))
        if fmt is None:
            collector.metrics.rejected.labels("invalid").inc()
            return JSONResponse(
                {"detail": f"Content-Type: expected {otlp.PROTOBUF} or {otlp.JSON}"},
                status_code=415,
            )
        return await handle(request, lambda: collector.otlp_export(request, fmt), fmt)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(collector.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ready = collector.publisher is not None and collector.publisher.connected()
        return JSONResponse(
            {"status": "ok" if ready else "bus unavailable"}, status_code=200 if ready else 503
        )

    @asynccontextmanager
    async def lifespan(app):
        await collector.start()
        yield
        await collector.stop()

    app = Starlette(
        routes=[
            Route("/collect", collect_get, methods=["GET"]),
            Route("/collect", collect_post, methods=["POST"]),
            Route("/v1/metrics", otlp_metrics, methods=["POST"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        lifespan=lifespan,
        # A 413 (or any answer) reaches a client still sending its body.
        middleware=[Middleware(DrainedBodies)],
    )
    app.state.collector = collector
    return app


def serve_collector(host: str, port: int, settings: CollectedSettings) -> int:
    """Run the collector until interrupted (0), or 1 when it could not start."""
    import uvicorn

    if settings.tokens_file == "" and not is_loopback(host):
        from metrics_pipeline.resources.engines import ConfigurationError

        raise ConfigurationError(
            f"refusing to serve on {host} without METRICS_COLLECTOR_TOKENS_FILE: with no keys "
            "the collector accepts loopback clients only (use --host 127.0.0.1)"
        )
    app = create_collector_app(settings)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    )
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    return 0 if server.started else 1
