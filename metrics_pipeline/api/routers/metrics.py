"""``GET /api/metrics/{billerId}``: one MetricType of one biller at one level over a time range;
``GET /api/metrics/{billerId}/objectives``: the biller's objectives and error budget."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from metrics_pipeline.api.deps import Caller, State
from metrics_pipeline.api.errors import ERRORS, INVALID, ApiError, ErrorBody
from metrics_pipeline.api.models import BillerObjectivesOut, MetricSeries
from metrics_pipeline.api.paging import BadToken, Cursor
from metrics_pipeline.api.responses import json_response, points_json, series_response
from metrics_pipeline.api.settings import MAX_POINTS
from metrics_pipeline.api.times import (
    RANGE_NOTE,
    TIME_PATTERN,
    earliest,
    parse_time,
    utc_iso,
)
from metrics_pipeline.clock import utc_second
from metrics_pipeline.semantics import DAILY, HOURLY, METRIC_TYPES, TIMESTAMP_TYPES, WEEKLY

METRICS_BY_ID = {m.id: m for m in METRIC_TYPES}
LEVELS_BY_ID = {t.id: t for t in TIMESTAMP_TYPES}
#: The range a series covers when the caller gives no ``from``.
DEFAULT_SPAN = {
    HOURLY.id: timedelta(days=2),
    DAILY.id: timedelta(days=31),
    WEEKLY.id: timedelta(weeks=26),
}
MAX_INT32 = 2**31 - 1

router = APIRouter(tags=["metrics"])
#: The path parameter of every per-biller route.
BillerIdPath = Annotated[int, PathParam(ge=1, le=MAX_INT32, description="BillerId")]


def may_read(who, biller_id: int) -> None:
    """A 403 naming the biller when the caller's token may not read it."""
    if not who.can_read(biller_id):
        raise ApiError(403, f"billerId: this token may not read biller {biller_id}", "billerId")


def known(by_id, value: int, parameter: str, what: str, all_types):
    """The reference row with this id, or a 400 naming the parameter and the known ids."""
    found = by_id.get(value)
    if found is None:
        names = ", ".join(f"{t.id} {t.name}" for t in all_types)
        raise ApiError(400, f"{parameter}: unknown {what} {value} (known: {names})", parameter)
    return found


@router.get(
    "/api/metrics/{billerId}",
    response_model=MetricSeries,
    responses={
        **ERRORS,
        **INVALID,
        404: {"model": ErrorBody, "description": "No data for the biller"},
    },
)
async def metrics(
    who: Caller,
    state: State,
    billerId: BillerIdPath,
    # The ids are checked in the route (an unknown one is a 400 listing the known ones); the
    # spec lists them as the enum they are.
    metricTypeId: Annotated[
        int,
        Query(
            description="A MetricTypeId: " + ", ".join(f"{m.id} {m.name}" for m in METRIC_TYPES),
            json_schema_extra={"enum": sorted(METRICS_BY_ID)},
        ),
    ],
    timeStampTypeId: Annotated[
        int,
        Query(
            description="A TimeStampTypeId: "
            + ", ".join(f"{t.id} {t.name}" for t in TIMESTAMP_TYPES),
            json_schema_extra={"enum": sorted(LEVELS_BY_ID)},
        ),
    ],
    from_: Annotated[
        str | None,
        Query(
            alias="from",
            max_length=64,
            description="Range start (inclusive), ISO 8601; UTC when no offset. "
            "Default: `to` minus 2 days (hourly), 31 days (daily), 26 weeks (weekly); "
            + RANGE_NOTE,
            json_schema_extra={"pattern": TIME_PATTERN},
        ),
    ] = None,
    to: Annotated[
        str | None,
        Query(
            max_length=64,
            description=f"Range end (exclusive), ISO 8601. Default: now; {RANGE_NOTE}",
            json_schema_extra={"pattern": TIME_PATTERN},
        ),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_POINTS, description=f"Points per page (at most {MAX_POINTS})")
    ] = MAX_POINTS,
    continuationToken: Annotated[
        str | None, Query(max_length=512, description="From the previous page")
    ] = None,
) -> Response:
    """Points of one metric of one biller, in time order, one per window of the level."""
    may_read(who, billerId)
    metric = known(METRICS_BY_ID, metricTypeId, "metricTypeId", "metric type", METRIC_TYPES)
    level = known(
        LEVELS_BY_ID, timeStampTypeId, "timeStampTypeId", "timestamp type", TIMESTAMP_TYPES
    )
    end = parse_time(to, "to") if to is not None else utc_second()
    start = (
        parse_time(from_, "from") if from_ is not None else earliest(end, DEFAULT_SPAN[level.id])
    )
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
    reader = state.reader

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
    body, how = await state.series_cache.get_or_load(
        (billerId, metric.id, level.id, start, end, after, limit),
        lambda: run_in_threadpool(load),
    )
    return series_response(body, how)


@router.get(
    "/api/metrics/{billerId}/objectives",
    response_model=BillerObjectivesOut,
    responses={**ERRORS, **INVALID, 404: {"model": ErrorBody, "description": "Unknown biller"}},
)
async def biller_objectives(
    who: Caller,
    state: State,
    billerId: BillerIdPath,
    at: Annotated[
        str | None,
        Query(
            max_length=64,
            description="Judge at the end of the hour holding this time, ISO 8601; "
            f"{RANGE_NOTE}. Default: the end of the last whole hour",
            json_schema_extra={"pattern": TIME_PATTERN},
        ),
    ] = None,
) -> Response:
    """The biller's objectives (BillerObjective) judged over the read hourly rows: per rate
    objective the 30-day error budget remaining and the page (14.4x over 1 h) and ticket (6x
    over 6 h and the last hour) burn rates; the hour's P95 against its objective; windows under
    METRICS_OBJECTIVE_MIN_REQUESTS requests never fire ("not enough traffic")."""
    may_read(who, billerId)
    end = HOURLY.floor(parse_time(at, "at") if at is not None else utc_second())
    min_requests = state.settings.objective_min_requests
    reader = state.reader

    def load() -> dict:
        found = reader.objectives(billerId, end, min_requests)
        head = {"billerId": billerId, "at": utc_iso(end), "minRequests": min_requests}
        if billerId in found.states:
            return head | {"invalid": None, **found.states[billerId]}
        if billerId not in found.invalid and not reader.biller_exists(billerId):
            raise ApiError(
                404, f"billerId: no objective and no data for biller {billerId}", "billerId"
            )
        invalid = found.invalid.get(billerId)
        return head | {
            "objectives": None,
            "invalid": invalid,
            "errorRate": None,
            "timeoutRate": None,
            "p95": None,
            "state": "invalid" if invalid else "no objective",
            "severity": None,
            "why": invalid or "no BillerObjective row: the biller has no objective",
        }

    return json_response(await run_in_threadpool(load))
