"""Availability of scenarios (seed 001), read from AvailabilityPublished and the minute rows:

- ``GET /api/availability/scenarios``: the Scenario table (id, name, target);
- ``GET /api/availability/scenarios/{scenarioId}``: one scenario's hourly or daily series;
- ``GET /api/availability/pivot``: availability as time x scenarios, as the portal's UI takes it;
- ``GET /api/availability/slo``: error budget, burn-rate alerts and the budget per day;
- ``GET /availability``: the dashboard's availability view (not in the OpenAPI spec).
"""

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from metrics_pipeline.api.deps import Caller, State
from metrics_pipeline.api.errors import ERRORS, INVALID, ApiError, ErrorBody
from metrics_pipeline.api.responses import json_response
from metrics_pipeline.api.routers.dashboard import page
from metrics_pipeline.api.times import (
    RANGE_NOTE,
    TIME_PATTERN,
    From,
    To,
    earliest,
    parse_time,
)
from metrics_pipeline.availability import reads
from metrics_pipeline.availability.sql import DAILY, HOURLY, build_tables
from metrics_pipeline.availability.writer import Store
from metrics_pipeline.clock import utc_second
from metrics_pipeline.resources.engines import DatabaseUnreachable

router = APIRouter(tags=["availability"])
LEVELS = {HOURLY: "hourly", DAILY: "daily"}
DEFAULT_SPAN = {HOURLY: timedelta(days=2), DAILY: timedelta(days=31)}
#: At most this many hours (or days) in one answer.
MAX_WINDOWS = 24 * 92
MAX_SCENARIOS = 200

Level = Annotated[
    int,
    Query(description="TimeStampTypeId: 1 hourly, 2 daily", json_schema_extra={"enum": [1, 2]}),
]


def _store(request: Request, state) -> Store | None:
    """A read-only view of the family's tables over the API's warehouse engine; None while the
    warehouse has no availability tables yet (nothing materialized): the lists are then empty."""
    tables = build_tables(state.settings.db_schema)
    if not getattr(request.app.state, "availability_tables", False):
        try:
            present = inspect(state.reader.engine).has_table(
                tables.published.name, schema=state.settings.db_schema
            )
        except (SQLAlchemyError, DatabaseUnreachable) as exc:
            raise ApiError(503, "the warehouse is unavailable; try again later") from exc
        if not present:
            return None
        request.app.state.availability_tables = True  # tables are never dropped by the pipeline
    return Store(state.reader.engine, tables, schema_ready=True)


def _range(level: int, from_: str | None, to: str | None):
    if level not in LEVELS:
        raise ApiError(
            400,
            f"timeStampTypeId: unknown level {level} (known: 1 hourly, 2 daily)",
            "timeStampTypeId",
        )
    # An empty value is a bad one (400), as on every route, not an absent one.
    end = parse_time(to, "to") if to is not None else utc_second() + timedelta(hours=1)
    start = parse_time(from_, "from") if from_ is not None else earliest(end, DEFAULT_SPAN[level])
    if start >= end:
        raise ApiError(400, "from: must be before to", "from")
    step = timedelta(hours=1) if level == HOURLY else timedelta(days=1)
    if (end - start) / step > MAX_WINDOWS:
        raise ApiError(400, f"from: at most {MAX_WINDOWS} {LEVELS[level]} windows", "from")
    return start, end


async def _read(fn, *args) -> Any:
    try:
        return await run_in_threadpool(fn, *args)
    except DatabaseUnreachable as exc:
        raise ApiError(503, "the warehouse is unavailable; try again later") from exc


@router.get("/api/availability/scenarios", responses=ERRORS)
async def scenario_list(who: Caller, state: State, request: Request):
    """The scenarios of the Scenario table, with their availability target (%)."""
    store = _store(request, state)
    return json_response({"scenarios": await _read(reads.scenarios, store) if store else []})


@router.get(
    "/api/availability/scenarios/{scenarioId}",
    responses={**ERRORS, **INVALID, 404: {"model": ErrorBody, "description": "Unknown scenario"}},
)
async def scenario_series(
    who: Caller,
    state: State,
    request: Request,
    scenarioId: Annotated[str, PathParam(max_length=200, description="ScenarioId")],
    timeStampTypeId: Level = HOURLY,
    from_: From = None,
    to: To = None,
):
    """One scenario's published availability, hourly or daily, oldest first."""
    start, end = _range(timeStampTypeId, from_, to)
    store = _store(request, state)
    known = await _read(reads.scenarios, store) if store else []
    if scenarioId not in {s["scenarioId"] for s in known}:
        raise ApiError(404, f"scenarioId: unknown scenario {scenarioId!r}", "scenarioId")
    points = await _read(reads.series, store, scenarioId, timeStampTypeId, start, end)
    return json_response(
        {
            "scenarioId": scenarioId,
            "timeStampTypeId": timeStampTypeId,
            "from": start.isoformat(),
            "to": end.isoformat(),
            "points": points,
        }
    )


@router.get(
    "/api/availability/pivot",
    responses={**ERRORS, **INVALID},
)
async def availability_pivot(
    who: Caller,
    state: State,
    request: Request,
    timeStampTypeId: Level = HOURLY,
    from_: From = None,
    to: To = None,
    scenarios: Annotated[
        str | None, Query(max_length=4000, description="Comma-separated ScenarioIds (default all)")
    ] = None,
):
    """Availability (%) with one row per hour or day and one column per scenario."""
    start, end = _range(timeStampTypeId, from_, to)
    wanted = [s for s in (scenarios or "").split(",") if s] or None
    if wanted and len(wanted) > MAX_SCENARIOS:
        raise ApiError(400, f"scenarios: at most {MAX_SCENARIOS}", "scenarios")
    store = _store(request, state)
    if store is None:
        body = {
            "timeStampTypeId": timeStampTypeId,
            "scenarios": [],
            "times": [],
            "availability": [],
        }
    else:
        body = await _read(reads.pivot, store, timeStampTypeId, start, end, wanted)
    return json_response({"from": start.isoformat(), "to": end.isoformat(), **body})


@router.get("/api/availability/slo", responses={**ERRORS, **INVALID})
async def slo_state(
    who: Caller,
    state: State,
    request: Request,
    at: Annotated[
        str | None,
        Query(
            max_length=64,
            description=f"Evaluation time, ISO 8601; {RANGE_NOTE}. Default: now",
            json_schema_extra={"pattern": TIME_PATTERN},
        ),
    ] = None,
    days: Annotated[int, Query(ge=1, le=90, description="Days of budget history")] = 30,
):
    """Per scenario: target, 30-day availability and error budget remaining, the burn-rate
    alerts (page: 14.4x over 1 h and 5 min; ticket: 6x over 6 h and 30 min; gated below
    METRICS_SLO_MIN_REQUESTS requests), and the budget remaining at the end of each day."""
    when = parse_time(at, "at") if at is not None else utc_second()
    min_requests = state.settings.slo_min_requests
    store = _store(request, state)
    if store is None:
        return json_response({"at": when.isoformat(), "minRequests": min_requests, "scenarios": []})
    return json_response(await _read(reads.slo_report, store, when, min_requests, days))


@router.get("/availability", response_class=HTMLResponse, include_in_schema=False)
def availability_page(request: Request, state: State):
    """The availability view: scenario selector, availability and budget graphs."""
    return page(request, state, "availability.html")
