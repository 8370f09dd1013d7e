"""The metrics API and the dashboard: ``create_app(settings)`` builds the FastAPI application.

Endpoints (all JSON but ``/``):
- ``GET /api/health``: 200 when the warehouse answers, 503 otherwise (no token needed).
- ``GET /api/metrics/{billerId}``: one MetricType of one biller at one level over a time range.
- ``GET /api/metric-types``, ``GET /api/timestamp-types``: reference data (Redis-cached).
- ``GET /api/billers``: the billers with data that the caller may read.
- ``GET /``: the auto-refreshing dashboard; ``/openapi.json``: the OpenAPI spec.
"""

import gc
import json
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from metrics_pipeline.api.auth import LOOPBACK_PRINCIPAL, Principal, load_tokens, token_digest
from metrics_pipeline.api.cache import MetadataCache
from metrics_pipeline.api.paging import BadToken, Cursor
from metrics_pipeline.api.reader import WarehouseReader
from metrics_pipeline.api.series_cache import SeriesCache
from metrics_pipeline.api.settings import MAX_POINTS, ApiSettings, is_loopback
from metrics_pipeline.api.vendor import ChartLibrary
from metrics_pipeline.resources.engines import safe_url
from metrics_pipeline.semantics import DAILY, HOURLY, METRIC_TYPES, TIMESTAMP_TYPES, WEEKLY

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
METRICS_BY_ID = {m.id: m for m in METRIC_TYPES}
LEVELS_BY_ID = {t.id: t for t in TIMESTAMP_TYPES}
#: The range a series covers when the caller gives no ``from``.
DEFAULT_SPAN = {
    HOURLY.id: timedelta(days=2),
    DAILY.id: timedelta(days=31),
    WEEKLY.id: timedelta(weeks=26),
}
MAX_INT32 = 2**31 - 1


# --- errors ------------------------------------------------------------------------------------


class ApiError(Exception):
    """A 4xx/5xx answer with a message (and the parameter it is about, when there is one)."""

    def __init__(self, status: int, message: str, parameter: str | None = None, headers=None):
        super().__init__(message)
        self.status, self.message, self.parameter = status, message, parameter
        self.headers = headers


class ErrorBody(BaseModel):
    detail: str = Field(description="What went wrong, naming the parameter when one is at fault")
    parameter: str | None = Field(default=None, description="The parameter at fault, if any")


def _error_response(status: int, message: str, parameter: str | None = None, headers=None):
    return JSONResponse(
        {"detail": message, "parameter": parameter},
        status_code=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


# --- response models (for the OpenAPI spec; responses are serialized directly) ------------------


class MetricTypeRef(BaseModel):
    id: int
    name: str
    unit: str


class TimeStampTypeRef(BaseModel):
    id: int
    name: str


class PointOut(BaseModel):
    t: str = Field(description="Start of the window, ISO 8601 UTC")
    value: float | None = Field(description="The metric's value; null when undefined")
    requestCount: int | None = Field(description="Calls in the window")


class MetricSeries(BaseModel):
    billerId: int
    metricType: MetricTypeRef
    timeStampType: TimeStampTypeRef
    model_config = {"populate_by_name": True}
    from_: str = Field(alias="from", description="Start of the range (inclusive), ISO 8601 UTC")
    to: str = Field(description="End of the range (exclusive), ISO 8601 UTC")
    points: list[PointOut]
    continuationToken: str | None = Field(
        description="Pass back as continuationToken for the next page; null on the last page"
    )


class MetricTypeOut(BaseModel):
    id: int
    name: str
    unit: str
    description: str | None


class TimeStampTypeOut(BaseModel):
    id: int
    name: str
    hierarchyLevel: int


class BillersOut(BaseModel):
    billers: list[int]


class HealthOut(BaseModel):
    status: str
    warehouse: str
    cache: str


ERRORS = {
    400: {"model": ErrorBody, "description": "A parameter is invalid"},
    401: {"model": ErrorBody, "description": "No token, or an unknown token"},
    403: {"model": ErrorBody, "description": "The token may not read this biller"},
    503: {"model": ErrorBody, "description": "The warehouse does not answer"},
}


# --- helpers ------------------------------------------------------------------------------------


def utc_iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds") + "Z"


def _json(body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        media_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def points_json(head: dict, points) -> bytes:
    """``head`` plus ``"points": [...]`` as JSON. The points are written straight to text: a page
    holds up to 1000 of them and this is the API's hot path. Values are ints or floats whose repr
    is the shortest exact form (the warehouse keeps 2 decimals), never NaN."""
    rows = ",".join(
        [
            f'{{"t":"{t.isoformat()}Z","value":{"null" if v is None else repr(v)},'
            f'"requestCount":{"null" if n is None else n}}}'
            for t, v, n in points
        ]
    )
    text = json.dumps(head, separators=(",", ":"))
    return f'{text[:-1]},"points":[{rows}]}}'.encode()


def _series_response(body: bytes, cache: str) -> Response:
    return Response(
        body,
        media_type="application/json",
        headers={"Cache-Control": "no-store", "X-Cache": cache},
    )


def parse_time(text: str, parameter: str) -> datetime:
    """An ISO 8601 date or time as naive UTC; one without an offset is taken as UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ApiError(
            400, f"{parameter}: not an ISO 8601 date or time: {text[:40]!r}", parameter
        ) from None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


@dataclass
class AppState:
    settings: ApiSettings
    reader: WarehouseReader
    cache: MetadataCache
    tokens: dict[str, Principal] | None
    chart_library: ChartLibrary


bearer = HTTPBearer(auto_error=False, description="A token listed in METRICS_API_TOKENS_FILE")


def state_of(request: Request) -> AppState:
    return request.app.state.metrics


async def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The caller: from its bearer token, or the loopback caller when no tokens are configured."""
    state = state_of(request)
    if state.tokens is None:
        client = request.client.host if request.client else ""
        if is_loopback(client):
            return LOOPBACK_PRINCIPAL
        raise ApiError(
            401, "this server has no API tokens configured and serves loopback clients only"
        )
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or not credentials.credentials:
        raise ApiError(401, "missing bearer token (Authorization: Bearer <token>)", None, challenge)
    found = state.tokens.get(token_digest(credentials.credentials))
    if found is None:
        raise ApiError(401, "unknown bearer token", None, challenge)
    return found


Caller = Annotated[Principal, Depends(principal)]


class SecurityHeaders:
    """Adds nosniff and no-referrer to every answer (plain ASGI: no per-request task)."""

    HEADERS = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"))

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in self.HEADERS if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --- the application ----------------------------------------------------------------------------


def create_app(settings: ApiSettings) -> FastAPI:
    """The API and dashboard over ``settings.warehouse_url``. Opens no connection until asked."""
    tokens = load_tokens(settings.tokens_file) if settings.tokens_file else None
    reader = WarehouseReader(settings.warehouse_url, settings.db_schema)
    cache = MetadataCache(
        settings.redis_url,
        settings.cache_prefix,
        settings.cache_ttl_s,
        namespace=safe_url(settings.warehouse_url),
        timeout_s=settings.redis_timeout_s,
        retry_after_s=settings.redis_retry_after_s,
    )
    series_cache = SeriesCache(settings.series_cache_s)
    state = AppState(settings, reader, cache, tokens, ChartLibrary.from_package())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # The process holds ~10^5 long-lived objects (Dagster, pydantic, SQLAlchemy); without
        # this every full collection walks them all and stalls requests for ~100 ms.
        gc.collect()
        gc.freeze()
        yield
        reader.dispose()
        cache.close()

    app = FastAPI(
        title="DataPump metrics API",
        version="1",
        description=(
            "Service-level metrics of billers (response time, error and timeout rates, "
            "throughput, percentiles, availability) read from the metrics warehouse."
        ),
        # The interactive docs pages load their scripts from a CDN; the spec is at /openapi.json.
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.metrics = state
    templates = Jinja2Templates(directory=str(HERE / "templates"))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return _error_response(exc.status, exc.message, exc.parameter, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("path", "query", "header")]
        parameter = ".".join(loc) or None
        message = first.get("msg", "invalid request")
        return _error_response(422, f"{parameter}: {message}" if parameter else message, parameter)

    @app.exception_handler(SQLAlchemyError)
    async def warehouse_error(request: Request, exc: SQLAlchemyError):
        log.error("warehouse error on %s: %s", request.url.path, exc)
        return _error_response(503, "the warehouse is unavailable; try again later")

    app.add_middleware(SecurityHeaders)

    @app.get("/api/health", response_model=HealthOut, responses={503: {"model": HealthOut}})
    def health(request: Request) -> Response:
        """200 when the warehouse answers a query, 503 when it does not. Needs no token."""
        try:
            reader.ping()
            warehouse = "ok"
        except SQLAlchemyError as exc:
            log.warning("health: warehouse unavailable: %s", exc)
            warehouse = "unavailable"
        body = {
            "status": "ok" if warehouse == "ok" else "unavailable",
            "warehouse": warehouse,
            "cache": cache.status(),
        }
        return JSONResponse(
            body,
            status_code=200 if warehouse == "ok" else 503,
            headers={"Cache-Control": "no-store"},
        )

    @app.get(
        "/api/metrics/{billerId}",
        response_model=MetricSeries,
        responses={**ERRORS, 404: {"model": ErrorBody, "description": "No data for the biller"}},
    )
    async def metrics(
        who: Caller,
        billerId: Annotated[int, PathParam(ge=1, le=MAX_INT32, description="BillerId")],
        metricTypeId: Annotated[int, Query(description="A MetricTypeId (1-8)")],
        timeStampTypeId: Annotated[int, Query(description="1 Hourly, 2 Daily, 3 Weekly")],
        from_: Annotated[
            str | None,
            Query(
                alias="from",
                max_length=64,
                description="Range start (inclusive), ISO 8601; UTC when no offset. "
                "Default: `to` minus 2 days (hourly), 31 days (daily), 26 weeks (weekly)",
            ),
        ] = None,
        to: Annotated[
            str | None,
            Query(max_length=64, description="Range end (exclusive), ISO 8601. Default: now"),
        ] = None,
        limit: Annotated[
            int, Query(ge=1, le=MAX_POINTS, description=f"Points per page (at most {MAX_POINTS})")
        ] = MAX_POINTS,
        continuationToken: Annotated[
            str | None, Query(max_length=512, description="From the previous page")
        ] = None,
    ) -> Response:
        """Points of one metric of one biller, in time order, one per window of the level."""
        if not who.can_read(billerId):
            raise ApiError(403, f"billerId: this token may not read biller {billerId}", "billerId")
        metric = _known(METRICS_BY_ID, metricTypeId, "metricTypeId", "metric type", METRIC_TYPES)
        level = _known(
            LEVELS_BY_ID, timeStampTypeId, "timeStampTypeId", "timestamp type", TIMESTAMP_TYPES
        )
        end = parse_time(to, "to") if to is not None else utc_now()
        start = parse_time(from_, "from") if from_ is not None else end - DEFAULT_SPAN[level.id]
        after = None
        if continuationToken is not None:
            try:
                cursor = Cursor.decode(continuationToken)
            except BadToken as exc:
                raise ApiError(400, f"continuationToken: {exc}", "continuationToken") from None
            same = (cursor.biller_id, cursor.metric_type_id, cursor.level) == (
                billerId,
                metric.id,
                level.id,
            )
            if (
                not same
                or (from_ is not None and start != cursor.start)
                or (to is not None and end != cursor.end)
            ):
                raise ApiError(
                    400,
                    "continuationToken: belongs to another query (same billerId, metricTypeId, "
                    "timeStampTypeId, from and to are needed)",
                    "continuationToken",
                )
            start, end, after = cursor.start, cursor.end, cursor.after
        if start > end:
            raise ApiError(400, f"from: {utc_iso(start)} is after to {utc_iso(end)}", "from")

        def load() -> bytes:
            points, more = reader.series(metric.id, billerId, level.id, start, end, after, limit)
            if not points and after is None and not reader.biller_exists(billerId):
                raise ApiError(404, f"billerId: no data for biller {billerId}", "billerId")
            token = None
            if more:
                token = Cursor(billerId, metric.id, level.id, start, end, points[-1][0]).encode()
            head = {
                "billerId": billerId,
                "metricType": {"id": metric.id, "name": metric.name, "unit": metric.unit},
                "timeStampType": {"id": level.id, "name": level.name},
                "from": utc_iso(start),
                "to": utc_iso(end),
                "continuationToken": token,
            }
            return points_json(head, points)

        # Validation and cache hits stay on the event loop; the warehouse read goes to a thread.
        body, how = await series_cache.get_or_load(
            (billerId, metric.id, level.id, start, end, after, limit),
            lambda: run_in_threadpool(load),
        )
        return _series_response(body, how)

    @app.get("/api/metric-types", response_model=list[MetricTypeOut], responses=ERRORS)
    def metric_types(who: Caller) -> Response:
        """The MetricType table (served from Redis while cached)."""
        value, how = cache.get_or_load("metric-types", reader.metric_types)
        return _json(value, {"X-Cache": how})

    @app.get("/api/timestamp-types", response_model=list[TimeStampTypeOut], responses=ERRORS)
    def timestamp_types(who: Caller) -> Response:
        """The TimeStampType table (served from Redis while cached)."""
        value, how = cache.get_or_load("timestamp-types", reader.timestamp_types)
        return _json(value, {"X-Cache": how})

    @app.get("/api/billers", response_model=BillersOut, responses=ERRORS)
    def billers(who: Caller) -> Response:
        """The billers that have data and that the caller's token may read."""
        return _json({"billers": reader.billers(who.billers, settings.max_billers)})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard(request: Request):
        response = templates.TemplateResponse(
            request,
            "dashboard.html",
            {
                "refresh_seconds": settings.refresh_seconds,
                "auth_required": tokens is not None,
                "max_points": MAX_POINTS,
                "chart_library_url": state.chart_library.url,
            },
        )
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
            "frame-ancestors 'none'; form-action 'self'"
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get(ChartLibrary.ROUTE, include_in_schema=False)
    def chart_library(request: Request) -> Response:
        return state.chart_library.response(request)

    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    return app


def _known(by_id, value: int, parameter: str, what: str, all_types):
    """The reference row with this id, or a 400 naming the parameter and the known ids."""
    found = by_id.get(value)
    if found is None:
        known = ", ".join(f"{t.id} {t.name}" for t in all_types)
        raise ApiError(400, f"{parameter}: unknown {what} {value} (known: {known})", parameter)
    return found
