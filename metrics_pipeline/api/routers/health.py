"""``GET /api/health``: does the warehouse answer? Needs no token."""

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from metrics_pipeline.api.deps import State
from metrics_pipeline.api.models import HealthOut

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/api/health", response_model=HealthOut, responses={503: {"model": HealthOut}})
def health(state: State) -> Response:
    """200 when the warehouse answers a query, 503 when it does not. Needs no token."""
    try:
        state.reader.ping()
        warehouse = "ok"
    except SQLAlchemyError as exc:
        log.warning("health: warehouse unavailable: %s", exc)
        warehouse = "unavailable"
    body = {
        "status": "ok" if warehouse == "ok" else "unavailable",
        "warehouse": warehouse,
        "cache": state.cache.status(),
    }
    return JSONResponse(
        body,
        status_code=200 if warehouse == "ok" else 503,
        headers={"Cache-Control": "no-store"},
    )
