"""``GET /metrics``: the platform's health for Prometheus (text exposition format), read from
the coverage ledger, the published availability tables and the billers' objectives, cached a
few seconds so that any number of scrapers cost one read. Needs no token, like ``/api/health``."""

import threading
import time

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from metrics_pipeline.api.deps import State
from metrics_pipeline.api.routers.availability import _store
from metrics_pipeline.availability.pipeline import slo_states
from metrics_pipeline.clock import utc_second
from metrics_pipeline.datapump.objectives import RATE_KINDS
from metrics_pipeline.health import burn_windows, window_label
from metrics_pipeline.resources.engines import DatabaseUnreachable
from metrics_pipeline.semantics import HOURLY

router = APIRouter(tags=["health"])
#: Seconds one exposition is served again before the warehouse is read anew.
CACHE_S = 5.0
_lock = threading.Lock()


def exposition(state, store) -> bytes:
    """The figures, read now, in Prometheus' text format."""
    now = utc_second()
    registry = CollectorRegistry()
    freshness = Gauge(
        "metrics_pipeline_freshness_seconds",
        "Seconds from the end of the newest fully covered hour to now",
        ["family"],
        registry=registry,
    )
    backlog = Gauge(
        "metrics_pipeline_backlog_hours",
        "Hours of the backlog look-back window not fully covered",
        ["family"],
        registry=registry,
    )
    uncovered = Gauge(
        "metrics_pipeline_uncovered_hours",
        "Hours, however old, with an entity whose latest computation is in this state",
        ["family", "state"],
        registry=registry,
    )
    for health in state.reader.health(now, state.settings.backlog):
        freshness.labels(health.family).set(health.freshness_s)
        backlog.labels(health.family).set(health.backlog_hours)
        for s, hours in health.uncovered_hours.items():
            uncovered.labels(health.family, s).set(hours)
    budget = Gauge(
        "metrics_pipeline_slo_error_budget_remaining_ratio",
        "Share of the scenario's 30-day error budget left (1 untouched, 0 spent, < 0 overspent)",
        ["scenario"],
        registry=registry,
    )
    burn = Gauge(
        "metrics_pipeline_slo_burn_rate",
        "Error rate over the window divided by the allowed error rate (1 spends the budget "
        "in exactly 30 days)",
        ["scenario", "window"],
        registry=registry,
    )
    if store is not None:
        min_requests = state.settings.slo_min_requests
        for scenario, slo in slo_states(store, now, min_requests).items():
            if slo["budgetRemaining"] is not None:
                budget.labels(str(scenario)).set(slo["budgetRemaining"])
            for window, rate in burn_windows(slo["alerts"]).items():
                burn.labels(str(scenario), window).set(rate)
    biller_figures(registry, state.reader, now, state.settings.objective_min_requests)
    return generate_latest(registry)


def biller_figures(registry: CollectorRegistry, reader, now, min_requests: int) -> None:
    """Each biller's rate objectives at the end of the last whole hour: the 30-day budget left,
    and the burn rate of each window with enough traffic to judge (a window of the read hours
    under METRICS_OBJECTIVE_MIN_REQUESTS requests has no series: it never pages)."""
    budget = Gauge(
        "metrics_pipeline_slo_biller_error_budget_remaining_ratio",
        "Share of the biller's 30-day error budget left for the objective (error_rate, "
        "timeout_rate): 1 untouched, 0 spent, < 0 overspent",
        ["biller", "objective"],
        registry=registry,
    )
    burn = Gauge(
        "metrics_pipeline_slo_biller_burn_rate",
        "The objective's failing share over the window (read hourly rows) divided by the "
        "allowed share (1 spends the budget in exactly 30 days)",
        ["biller", "objective", "window"],
        registry=registry,
    )
    found = reader.all_objectives(HOURLY.floor(now), min_requests)
    for biller, state in found.states.items():
        for kind in RATE_KINDS:
            rate = state[kind.key]
            if rate is None:
                continue
            if rate["budgetRemaining"] is not None:
                budget.labels(str(biller), kind.metric).set(rate["budgetRemaining"])
            # At hourly grain every window is some alert's long one, which counts its requests.
            enough = {
                window_label(a["long"]) for a in rate["alerts"] if a["longRequests"] >= min_requests
            }
            for window, value in burn_windows(rate["alerts"]).items():
                if window in enough:
                    burn.labels(str(biller), kind.metric, window).set(value)


@router.get("/metrics", include_in_schema=False)
async def metrics(state: State, request: Request) -> Response:
    """The platform's health as Prometheus metrics; 503 while the warehouse does not answer."""
    cached = getattr(request.app.state, "prometheus_exposition", None)
    if cached is None or time.monotonic() - cached[0] > CACHE_S:
        try:
            store = _store(request, state)
            body = await run_in_threadpool(_read_once, request, state, store)
        except (SQLAlchemyError, DatabaseUnreachable):
            return Response(
                "the warehouse is unavailable\n", status_code=503, media_type="text/plain"
            )
        cached = request.app.state.prometheus_exposition = (time.monotonic(), body)
    return Response(cached[1], media_type=CONTENT_TYPE_LATEST)


def _read_once(request: Request, state, store) -> bytes:
    # One read at a time: concurrent scrapes of an expired cache wait for it, then share it.
    with _lock:
        cached = getattr(request.app.state, "prometheus_exposition", None)
        if cached is not None and time.monotonic() - cached[0] <= CACHE_S:
            return cached[1]
        return exposition(state, store)
