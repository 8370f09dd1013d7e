"""The query service of collected metrics (seed 002):
``GET /<key>/<stat_type>/<date>/<hour>[?app=]`` -> ``{"key", "stat", "date", "hour", "value",
"count"}`` (and ``"app"`` with ``?app=``), and ``GET /api/collected/<key>/series?stat&from&to
[&app]`` -> the hours of a range, for graphs.

Served from CollectedMetricHourly (all apps) or CollectedMetricAppHourly (``?app=``); an hour
without a statistics row yet (the running hour, or one the refresh has not reached) is computed
from the raw CollectedMetric rows of that key (and app) and hour. Points arriving late for an
hour that already has its row show after the next refresh. Same authentication as the metrics
API (any valid token may read collected metrics).
"""

import re
from datetime import date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import inspect

from metrics_pipeline.api.deps import Caller, State
from metrics_pipeline.api.errors import ERRORS, INVALID, ApiError, ErrorBody
from metrics_pipeline.api.responses import json_response
from metrics_pipeline.api.routers.dashboard import page
from metrics_pipeline.api.times import (
    DATE_PATTERN,
    RANGE_NOTE,
    From,
    To,
    earliest,
    parse_time,
    utc_iso,
    within_range,
)
from metrics_pipeline.clock import utc_second
from metrics_pipeline.collected.rules import APP_PATTERN, KEY_PATTERN, STAT_TYPES, hour_start
from metrics_pipeline.collected.store import HOUR, CollectedStore

router = APIRouter(tags=["collected metrics"])

#: First path segments of the API's other routes: never a metric key here.
RESERVED = ("api", "static", "openapi.json")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_HOUR = re.compile(r"\d{1,2}")
#: The spec's patterns of the path segments (what the checks below accept).
_KEY = f"^{KEY_PATTERN.pattern}$"
_HOUR_PATTERN = r"^([01]?\d|2[0-3])$"
#: The longest range of the series route, and its default.
MAX_SERIES = timedelta(days=366)
DEFAULT_SERIES = timedelta(hours=24)

Key = Annotated[str, PathParam(description="A collected key", json_schema_extra={"pattern": _KEY})]
App = Annotated[
    str | None,
    Query(
        max_length=100,
        description="One client app's figures (default: all apps together)",
        json_schema_extra={"pattern": f"^{APP_PATTERN.pattern}$"},
    ),
]


class CollectedStat(BaseModel):
    key: str
    stat: str = Field(description="One of " + ", ".join(STAT_TYPES))
    date: str = Field(description="YYYY-MM-DD (UTC)")
    hour: int = Field(description="0-23 (UTC)")
    value: float | None = Field(description="The statistic; null when the hour has no points")
    count: int = Field(description="Points in the hour")
    app: str | None = Field(None, description="Present with ?app=: the app of the figures")


class SeriesHour(BaseModel):
    start: str = Field(description="Start of the UTC hour, ISO 8601")
    value: float | None = Field(description="The statistic (null: not kept for this hour)")
    count: int = Field(description="Points in the hour")


class CollectedSeries(BaseModel):
    key: str
    stat: str
    app: str | None = Field(description="The app, or null for all apps together")
    from_: str = Field(alias="from", description="First hour of the range (UTC)")
    to: str = Field(description="End of the range (exclusive, UTC)")
    hours: list[SeriesHour] = Field(
        description="The hours of the range with points, in order (an hour without is a gap)"
    )


def _store(request: Request, state) -> CollectedStore | None:
    """The app's store, once the warehouse has the collected tables (None before)."""
    store = getattr(request.app.state, "collected_store", None)
    if store is None:
        engine = state.reader.engine
        if not inspect(engine).has_table("CollectedMetric", schema=state.settings.db_schema):
            return None
        store = CollectedStore(engine, state.settings.db_schema)
        # Tables of an older version (no per-app table, no P95/P99) are upgraded before the
        # first read, in case no consumer or refresh has run since the upgrade.
        store.ensure_schema()
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


def check_stat(stat: str, parameter: str) -> None:
    if stat not in STAT_TYPES:
        raise ApiError(
            400,
            f"{parameter}: expected one of {', '.join(STAT_TYPES)}, got {stat[:20]!r}",
            parameter,
        )


def known_store(request: Request, state, key: str, app: str | None) -> CollectedStore:
    """The store, once ``key`` (and ``app``) are valid and known; else a 400 or 404 naming
    the parameter."""
    if not KEY_PATTERN.fullmatch(key):
        raise ApiError(400, "key: must match [A-Za-z0-9_.-]{1,100}", "key")
    if app is not None and not APP_PATTERN.fullmatch(app):
        raise ApiError(400, "app: must match [A-Za-z0-9_.-]{1,100}", "app")
    store = _store(request, state)
    if app is not None and (store is None or not store.app_known(app)):
        raise ApiError(404, f"app: {app!r} never sent metrics", "app")
    if store is None or not store.key_known(key, app):
        of = "" if app is None else f" from app {app!r}"
        raise ApiError(404, f"key: {key!r} was never collected{of}", "key")
    return store


#: The most (app, key) pairs the key list gives.
MAX_LISTED = 5000


@router.get("/api/collected/keys", responses=ERRORS)
def collected_keys(who: Caller, state: State, request: Request) -> Response:
    """The (app, key) pairs that have hourly statistics, in order (at most 5,000;
    ``truncated`` says when there are more)."""
    store = _store(request, state)
    pairs = store.known_series(MAX_LISTED + 1) if store is not None else []
    return json_response(
        {
            "series": [{"app": a, "key": k} for a, k in pairs[:MAX_LISTED]],
            "truncated": len(pairs) > MAX_LISTED,
        }
    )


@router.get("/collected", response_class=HTMLResponse, include_in_schema=False)
def collected_page(request: Request, state: State):
    """The collected-metrics view: app, key, statistic and period; a graph of the hours."""
    return page(request, state, "collected.html", {"stat_types": STAT_TYPES})


def series_hours(
    store: CollectedStore, key: str, first: datetime, last: datetime, app: str | None
) -> dict[datetime, object]:
    """The stored hours of first..last, and the hours from the previous one on that have no
    row yet computed from the raw rows (the running hour, one the refresh has not reached)."""
    stats = store.series(key, first, last, app)
    recent = max(first, hour_start(utc_second()) - HOUR)
    while recent <= last:
        if recent not in stats:
            raw = store.hour_stats(key, recent, from_raw=True, app=app)
            if raw.count:
                stats[recent] = raw
        recent += HOUR
    return dict(sorted(stats.items()))


@router.get(
    "/api/collected/{key}/series",
    response_model=CollectedSeries,
    responses={**ERRORS, **INVALID, 404: {"model": ErrorBody, "description": "Unknown key or app"}},
)
def collected_series(
    key: Key,
    who: Caller,
    state: State,
    request: Request,
    stat: Annotated[
        str, Query(description="The statistic", json_schema_extra={"enum": list(STAT_TYPES)})
    ] = "average",
    from_: From = None,
    to: To = None,
    app: App = None,
) -> Response:
    """One statistic of a collected key per UTC hour over [from, to) (at most 366 days;
    default the last 24 hours), of all apps or of one (``?app=``): the hours with points."""
    check_stat(stat, "stat")
    end = parse_time(to, "to") if to is not None else utc_second()
    start = parse_time(from_, "from") if from_ is not None else earliest(end, DEFAULT_SERIES)
    first = hour_start(start)
    if end <= first:
        raise ApiError(400, f"from: {utc_iso(start)} must be before to {utc_iso(end)}", "from")
    if end - first > MAX_SERIES:
        raise ApiError(400, "to: a series is at most 366 days (8,784 hourly windows)", "to")
    store = known_store(request, state, key, app)
    last = hour_start(end - timedelta(microseconds=1))
    hours = series_hours(store, key, first, last, app)
    return json_response(
        {
            "key": key,
            "stat": stat,
            "app": app,
            "from": utc_iso(first),
            "to": utc_iso(end),
            "hours": [
                {"start": utc_iso(h), "value": s.stat(stat), "count": s.count}
                for h, s in hours.items()
            ],
        }
    )


# Declared after the /api/... routes: its four free segments would match them first.
@router.get(
    "/{key}/{stat_type}/{day}/{hour}",
    response_model=CollectedStat,
    responses={
        **ERRORS,
        **INVALID,
        404: {"model": ErrorBody, "description": "The key was never collected"},
    },
)
def collected_stat(
    key: Key,
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
    app: App = None,
) -> Response:
    """One statistic (average, min, max, median, count, p95 or p99) of a collected key for one
    UTC hour: of all apps together, or of one app (``?app=``)."""
    if key in RESERVED:
        raise ApiError(404, "Not Found")
    check_stat(stat_type, "stat_type")
    start = parse_hour_start(day, hour)
    store = known_store(request, state, key, app)
    stats = store.hour_stats(key, start, app=app)
    if stats.count == 0:
        stats = store.hour_stats(key, start, from_raw=True, app=app)
    body = {
        "key": key,
        "stat": stat_type,
        "date": start.date().isoformat(),
        "hour": start.hour,
        "value": stats.stat(stat_type) if stats.count else None,
        "count": stats.count,
    }
    return json_response(body if app is None else {**body, "app": app})
