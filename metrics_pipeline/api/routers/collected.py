"""The query service of collected metrics (seed 002):
``GET /<key>/<stat_type>/<date>/<hour>`` -> ``{"key", "stat", "date", "hour", "value", "count"}``.

Served from CollectedMetricHourly; an hour without a statistics row yet (the running hour, or
one the refresh has not reached) is computed from the raw CollectedMetric rows of that key and
hour. Points arriving late for an hour that already has its row show after the next refresh.
Same authentication as the metrics API (any valid token may read collected metrics).
"""

import re
from datetime import date, datetime, time
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import inspect

from metrics_pipeline.api.deps import Caller, State
from metrics_pipeline.api.errors import ERRORS, ApiError, ErrorBody
from metrics_pipeline.api.responses import json_response
from metrics_pipeline.api.times import DATE_PATTERN, RANGE_NOTE, within_range
from metrics_pipeline.collected.rules import KEY_PATTERN, STAT_TYPES
from metrics_pipeline.collected.store import CollectedStore

router = APIRouter(tags=["collected metrics"])

#: First path segments of the API's other routes: never a metric key here.
RESERVED = ("api", "static", "openapi.json")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_HOUR = re.compile(r"\d{1,2}")
#: The spec's patterns of the path segments (what the checks below accept).
_KEY = f"^{KEY_PATTERN.pattern}$"
_HOUR_PATTERN = r"^([01]?\d|2[0-3])$"


class CollectedStat(BaseModel):
    key: str
    stat: str = Field(description="One of " + ", ".join(STAT_TYPES))
    date: str = Field(description="YYYY-MM-DD (UTC)")
    hour: int = Field(description="0-23 (UTC)")
    value: float | None = Field(description="The statistic; null when the hour has no points")
    count: int = Field(description="Points in the hour")


def _store(request: Request, state) -> CollectedStore | None:
    """The app's store, once the warehouse has the collected tables (None before)."""
    store = getattr(request.app.state, "collected_store", None)
    if store is None:
        engine = state.reader.engine
        if not inspect(engine).has_table("CollectedMetric", schema=state.settings.db_schema):
            return None
        store = CollectedStore(engine, state.settings.db_schema)
        request.app.state.collected_store = store
    return store


def parse_hour_start(day: str, hour: str) -> datetime:
    """The UTC hour start of ``YYYY-MM-DD`` and ``0``-``23``, or a 400 naming the bad part."""
    try:
        if not _DATE.fullmatch(day):
            raise ValueError
        when = date.fromisoformat(day)
    except ValueError:
        raise ApiError(400, f"date: expected YYYY-MM-DD, got {day[:20]!r}", "date") from None
    if not _HOUR.fullmatch(hour) or not 0 <= int(hour) <= 23:
        raise ApiError(400, f"hour: expected 0-23 (UTC), got {hour[:20]!r}", "hour")
    # The API's time range: the hour's end, and SQL Server's DATETIME, stay representable.
    return within_range(datetime.combine(when, time(int(hour))), "date", f"{day} {int(hour)}h")


@router.get(
    "/{key}/{stat_type}/{day}/{hour}",
    response_model=CollectedStat,
    responses={**ERRORS, 404: {"model": ErrorBody, "description": "The key was never collected"}},
)
def collected_stat(
    key: Annotated[
        str, PathParam(description="A collected key", json_schema_extra={"pattern": _KEY})
    ],
    stat_type: Annotated[
        str, PathParam(description="The statistic", json_schema_extra={"enum": list(STAT_TYPES)})
    ],
    day: Annotated[
        str,
        PathParam(
            description=f"YYYY-MM-DD (UTC), {RANGE_NOTE}",
            json_schema_extra={"pattern": DATE_PATTERN},
        ),
    ],
    hour: Annotated[
        str, PathParam(description="0-23 (UTC)", json_schema_extra={"pattern": _HOUR_PATTERN})
    ],
    who: Caller,
    state: State,
    request: Request,
) -> Response:
    """One statistic (average, min, max, median or count) of a collected key for one UTC hour."""
    if key in RESERVED:
        raise ApiError(404, "Not Found")
    if not KEY_PATTERN.fullmatch(key):
        raise ApiError(400, "key: must match [A-Za-z0-9_.-]{1,100}", "key")
    if stat_type not in STAT_TYPES:
        raise ApiError(
            400,
            f"stat_type: expected one of {', '.join(STAT_TYPES)}, got {stat_type[:20]!r}",
            "stat_type",
        )
    start = parse_hour_start(day, hour)
    store = _store(request, state)
    if store is None or not store.key_known(key):
        raise ApiError(404, f"key: {key!r} was never collected", "key")
    stats = store.hour_stats(key, start)
    if stats.count == 0:
        stats = store.hour_stats(key, start, from_raw=True)
    return json_response(
        {
            "key": key,
            "stat": stat_type,
            "date": start.date().isoformat(),
            "hour": start.hour,
            "value": stats.stat(stat_type) if stats.count else None,
            "count": stats.count,
        }
    )
