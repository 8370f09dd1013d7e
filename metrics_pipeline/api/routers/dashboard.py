"""The dashboard pages (``GET /``, ``GET /exports``) and the chart library; not in the OpenAPI
spec."""

from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from metrics_pipeline.api.deps import State
from metrics_pipeline.api.exports.lifecycle import QUEUES
from metrics_pipeline.api.exports.objects import PUBLISHED
from metrics_pipeline.api.settings import MAX_POINTS
from metrics_pipeline.api.vendor import ChartLibrary

TEMPLATES_DIR = Path(__file__).parent.parent / "templates"
#: The dashboard's scripts come from this server only.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)

router = APIRouter(include_in_schema=False)


@cache
def templates() -> Jinja2Templates:
    return Jinja2Templates(directory=str(TEMPLATES_DIR))


def page(request: Request, state: State, template: str, context: dict | None = None):
    """A dashboard page with the server's settings and the strict content security policy."""
    response = templates().TemplateResponse(
        request,
        template,
        {
            "refresh_seconds": state.settings.refresh_seconds,
            "auth_required": state.tokens is not None,
            "max_points": MAX_POINTS,
            "chart_library_url": state.chart_library.url,
            **(context or {}),
        },
    )
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, state: State):
    return page(request, state, "dashboard.html")


@router.get("/exports", response_class=HTMLResponse)
def exports_page(request: Request, state: State):
    """A form starting an export, and the tasks in their four queues, refreshed in place, with
    cancel buttons on the live ones."""
    return page(request, state, "exports.html", {"queues": QUEUES, "objects": list(PUBLISHED)})


@router.get(ChartLibrary.ROUTE)
def chart_library(request: Request, state: State) -> Response:
    return state.chart_library.response(request)
