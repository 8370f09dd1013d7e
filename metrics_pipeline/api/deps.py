"""What routes depend on: the application's state and the caller (FastAPI dependencies).

Routes declare ``state: State`` and ``who: Caller``; nothing reads a module global.
"""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from metrics_pipeline.api.cache import MetadataCache
from metrics_pipeline.api.errors import ApiError
from metrics_pipeline.api.exports.service import ExportService
from metrics_pipeline.api.reader import CatalogNamesReader, WarehouseReader
from metrics_pipeline.api.series_cache import SeriesCache
from metrics_pipeline.api.settings import ApiSettings
from metrics_pipeline.api.vendor import ChartLibrary
from metrics_pipeline.web.auth import LOOPBACK_PRINCIPAL, Principal, token_digest
from metrics_pipeline.web.hosts import is_loopback


@dataclass
class AppState:
    """Everything one application holds, built by ``create_app`` (``app.state.metrics``)."""

    settings: ApiSettings
    reader: WarehouseReader
    names: CatalogNamesReader
    cache: MetadataCache
    series_cache: SeriesCache
    tokens: dict[str, Principal] | None
    chart_library: ChartLibrary
    exports: ExportService


def state_of(request: Request) -> AppState:
    return request.app.state.metrics


State = Annotated[AppState, Depends(state_of)]

bearer = HTTPBearer(auto_error=False, description="A token listed in METRICS_API_TOKENS_FILE")


async def principal(
    request: Request,
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The caller: from its bearer token, or the loopback caller when no tokens are configured."""
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


def _query_names(route) -> tuple[frozenset[str], bool]:
    """The query parameters a route declares (its dependencies' included), and whether it
    authenticates its caller."""
    cached = getattr(route, "_metrics_query_names", None)
    if cached is None:
        names, authenticated, pending = set(), False, [route.dependant]
        while pending:
            dependant = pending.pop()
            names.update(p.alias for p in dependant.query_params)
            authenticated = authenticated or dependant.call is principal
            pending.extend(dependant.dependencies)
        cached = (frozenset(names), authenticated)
        route._metrics_query_names = cached
    return cached


async def reject_unknown_query(request: Request) -> None:
    """An app-wide dependency: 400 for a query parameter the route does not take or one given
    twice, so that a typo (``timestampTypeId``) or a second value is an error instead of being
    ignored, as the spec says. A route that
    authenticates answers 401 first, so an unknown caller learns nothing about parameters."""
    route = request.scope.get("route")
    if route is None or not getattr(route, "include_in_schema", False):
        return
    names, authenticated = _query_names(route)
    given = [name for name, _ in request.query_params.multi_items()]
    unknown = sorted(set(given) - names)
    repeated = sorted({name for name in given if given.count(name) > 1} & names)
    if (unknown or repeated) and authenticated:
        await principal(request, state_of(request), await bearer(request))
    if unknown:
        known = ", ".join(sorted(names)) or "none"
        raise ApiError(
            400, f"{unknown[0][:40]}: unknown query parameter (known: {known})", unknown[0][:40]
        )
    if repeated:
        # Every parameter takes one value (lists are comma-separated): a second one would be
        # silently dropped.
        raise ApiError(400, f"{repeated[0]}: given more than once", repeated[0])
