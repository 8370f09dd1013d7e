"""Reference data: ``GET /api/metric-types``, ``/api/timestamp-types`` (Redis-cached) and
``/api/billers`` (the billers with data that the caller may read)."""

from fastapi import APIRouter
from fastapi.responses import Response

from metrics_pipeline.api.deps import Caller, State
from metrics_pipeline.api.errors import ERRORS
from metrics_pipeline.api.models import BillersOut, MetricTypeOut, TimeStampTypeOut
from metrics_pipeline.api.responses import json_response

router = APIRouter(tags=["reference"])


@router.get("/api/metric-types", response_model=list[MetricTypeOut], responses=ERRORS)
def metric_types(who: Caller, state: State) -> Response:
    """The MetricType table (served from Redis while cached)."""
    value, how = state.cache.get_or_load("metric-types", state.reader.metric_types)
    return json_response(value, {"X-Cache": how})


@router.get("/api/timestamp-types", response_model=list[TimeStampTypeOut], responses=ERRORS)
def timestamp_types(who: Caller, state: State) -> Response:
    """The TimeStampType table (served from Redis while cached)."""
    value, how = state.cache.get_or_load("timestamp-types", state.reader.timestamp_types)
    return json_response(value, {"X-Cache": how})


@router.get("/api/billers", response_model=BillersOut, responses=ERRORS)
def billers(who: Caller, state: State) -> Response:
    """The billers that have data and that the caller's token may read, with their names."""
    ids = state.reader.billers(who.billers, state.settings.max_billers)
    return json_response({"billers": ids, "names": state.names.names(ids)})
