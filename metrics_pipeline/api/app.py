"""The metrics API and the dashboard: ``create_app(settings)`` assembles the FastAPI application
from one router per area (``routers/``), the error handlers and the shared state.

Endpoints (all JSON but ``/``):
- ``GET /api/health``: 200 when the warehouse answers, 503 otherwise (no token needed).
- ``GET /api/metrics/{billerId}``: one MetricType of one biller at one level over a time range.
- ``GET /api/metric-types``, ``GET /api/timestamp-types``: reference data (Redis-cached).
- ``GET /api/billers``: the billers with data that the caller may read.
- ``GET /api/v2/exports/{objectName}``: a published table page by page (continuation tokens);
  ``GET|DELETE /api/v2/exports-status[/{task_id}]``: the export tasks by queue, cancelling.
- ``GET /``, ``GET /exports``: the auto-refreshing dashboard and the exports page;
  ``/openapi.json``: the OpenAPI spec.
"""

import gc
import hashlib
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from metrics_pipeline.api.cache import MetadataCache
from metrics_pipeline.api.deps import AppState, reject_unknown_query
from metrics_pipeline.api.errors import install_error_handlers
from metrics_pipeline.api.exports.service import ExportService
from metrics_pipeline.api.exports.store import MemoryStore, RedisStore
from metrics_pipeline.api.reader import CatalogNamesReader, WarehouseReader
from metrics_pipeline.api.routers import (
    availability,
    biviews,
    collected,
    dashboard,
    exports,
    health,
    metrics,
    prometheus,
    reference,
)
from metrics_pipeline.api.series_cache import SeriesCache
from metrics_pipeline.api.settings import ApiSettings
from metrics_pipeline.api.vendor import ChartLibrary
from metrics_pipeline.resources.engines import safe_url
from metrics_pipeline.web.auth import load_tokens
from metrics_pipeline.web.middleware import DrainedBodies, SecurityHeaders

STATIC_DIR = Path(__file__).parent / "static"
#: The API reads no request body; a larger one than this is refused (413).
MAX_BODY_BYTES = 64 * 1024


def _body_too_large(limit: int) -> dict:
    return {"detail": f"body: more than {limit} bytes (the API reads no body)", "parameter": "body"}


def build_state(settings: ApiSettings, clock: Callable[[], float] = time.time) -> AppState:
    """The state the routes share. Validates the tokens file and URLs; opens no connection."""
    tokens = load_tokens(settings.tokens_file) if settings.tokens_file else None
    cache = MetadataCache(
        settings.redis_url,
        settings.cache_prefix,
        settings.cache_ttl_s,
        namespace=safe_url(settings.warehouse_url),
        timeout_s=settings.redis_timeout_s,
        retry_after_s=settings.redis_retry_after_s,
    )
    reader = WarehouseReader(settings.warehouse_url, settings.db_schema)
    secret = settings.export_secret.encode() if settings.export_secret else None
    # Tasks of different warehouses sharing one Redis must not meet (as in MetadataCache).
    namespace = hashlib.sha256(safe_url(settings.warehouse_url).encode()).hexdigest()[:12]
    store = (
        RedisStore(settings.redis_url, f"{settings.cache_prefix}{namespace}:", secret=secret)
        if settings.redis_url
        else MemoryStore(secret=secret)
    )
    return AppState(
        settings=settings,
        reader=reader,
        names=CatalogNamesReader(settings.catalog_url),
        cache=cache,
        series_cache=SeriesCache(settings.series_cache_s),
        tokens=tokens,
        chart_library=ChartLibrary.from_package(),
        exports=ExportService(reader.engine, reader.tables, store, settings.exports, clock),
    )


def create_app(settings: ApiSettings, clock: Callable[[], float] = time.time) -> FastAPI:
    """The API and dashboard over ``settings.warehouse_url``. Opens no connection until asked.
    ``clock`` (epoch seconds) times the export tasks' lifecycle."""
    state = build_state(settings, clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # The process holds ~10^5 long-lived objects (Dagster, pydantic, SQLAlchemy); without
        # this every full collection walks them all and stalls requests for ~100 ms.
        gc.collect()
        gc.freeze()
        yield
        state.exports.close()
        state.exports.store.close()
        state.reader.dispose()
        state.names.dispose()
        state.cache.close()

    app = FastAPI(
        dependencies=[Depends(reject_unknown_query)],
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
    install_error_handlers(app)
    app.add_middleware(DrainedBodies, max_bytes=MAX_BODY_BYTES, error=_body_too_large)
    app.add_middleware(SecurityHeaders)  # outermost: on every answer, the 413 above included

    app.include_router(health.router)
    app.include_router(prometheus.router)
    app.include_router(metrics.router)
    app.include_router(reference.router)
    app.include_router(exports.router)
    app.include_router(biviews.router)
    app.include_router(dashboard.router)
    app.include_router(availability.router)

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    # Last: its catch-all /<key>/<stat>/<date>/<hour> must not shadow the routes above.
    app.include_router(collected.router)
    return app
