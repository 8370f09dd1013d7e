"""The metrics API and the dashboard: ``create_app(settings)`` assembles the FastAPI application
from one router per area (``routers/``), the error handlers and the shared state.

Endpoints (all JSON but ``/``):
- ``GET /api/health``: 200 when the warehouse answers, 503 otherwise (no token needed).
- ``GET /api/metrics/{billerId}``: one MetricType of one biller at one level over a time range.
- ``GET /api/metric-types``, ``GET /api/timestamp-types``: reference data (Redis-cached).
- ``GET /api/billers``: the billers with data that the caller may read.
- ``GET /``: the auto-refreshing dashboard; ``/openapi.json``: the OpenAPI spec.
"""

import gc
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from metrics_pipeline.api.auth import load_tokens
from metrics_pipeline.api.cache import MetadataCache
from metrics_pipeline.api.deps import AppState
from metrics_pipeline.api.errors import install_error_handlers
from metrics_pipeline.api.middleware import SecurityHeaders
from metrics_pipeline.api.reader import WarehouseReader
from metrics_pipeline.api.routers import collected, dashboard, health, metrics, reference
from metrics_pipeline.api.series_cache import SeriesCache
from metrics_pipeline.api.settings import ApiSettings
from metrics_pipeline.api.vendor import ChartLibrary
from metrics_pipeline.resources.engines import safe_url

STATIC_DIR = Path(__file__).parent / "static"


def build_state(settings: ApiSettings) -> AppState:
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
    return AppState(
        settings=settings,
        reader=WarehouseReader(settings.warehouse_url, settings.db_schema),
        cache=cache,
        series_cache=SeriesCache(settings.series_cache_s),
        tokens=tokens,
        chart_library=ChartLibrary.from_package(),
    )


def create_app(settings: ApiSettings) -> FastAPI:
    """The API and dashboard over ``settings.warehouse_url``. Opens no connection until asked."""
    state = build_state(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # The process holds ~10^5 long-lived objects (Dagster, pydantic, SQLAlchemy); without
        # this every full collection walks them all and stalls requests for ~100 ms.
        gc.collect()
        gc.freeze()
        yield
        state.reader.dispose()
        state.cache.close()

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
    install_error_handlers(app)
    app.add_middleware(SecurityHeaders)

    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(reference.router)
    app.include_router(dashboard.router)

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    # Last: its catch-all /<key>/<stat>/<date>/<hour> must not shadow the routes above.
    app.include_router(collected.router)
    return app
