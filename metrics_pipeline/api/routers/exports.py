"""Exports of the published tables and their activity monitoring (seed 003):

- ``GET /api/v2/exports/{objectName}``: the first call starts a task and answers its first page;
  the same URL with the page's continuation token answers the next page;
- ``GET /api/v2/exports-status``, ``GET|DELETE /api/v2/exports-status/{task_id}``.
"""

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query
from fastapi import Path as PathParam
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from metrics_pipeline.api.deps import Caller, State
from metrics_pipeline.api.errors import ERRORS, INVALID, ApiError, ErrorBody, LimitBody
from metrics_pipeline.api.exports.objects import PUBLISHED, published
from metrics_pipeline.api.exports.render import MEDIA_TYPES
from metrics_pipeline.api.exports.service import ExportQuery, Page
from metrics_pipeline.api.models import ExportPage, ExportQueues, ExportTask
from metrics_pipeline.api.queries import MAX_IN_LIST
from metrics_pipeline.api.responses import json_response
from metrics_pipeline.api.times import RANGE_NOTE, TIME_PATTERN, parse_time

router = APIRouter(tags=["exports"])

EXPORT_ERRORS = {
    **ERRORS,
    **INVALID,
    404: {"model": ErrorBody, "description": "Unknown objectName, or another caller's token"},
    410: {"model": ErrorBody, "description": "The token's task expired, was drained or canceled"},
    429: {"model": LimitBody, "description": "Too many exports, or the export cache is full"},
    503: {"model": ErrorBody, "description": "The warehouse or the export cache does not answer"},
}
TASK_ERRORS = {
    **ERRORS,
    **INVALID,
    404: {"model": ErrorBody, "description": "No such task of this caller"},
    503: {"model": ErrorBody, "description": "The export cache does not answer"},
}


def parse_billers(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        ids = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ApiError(
            400, f"billers: expected comma-separated BillerIds, got {text[:40]!r}", "billers"
        ) from None
    if not ids or any(not 1 <= i <= 2**31 - 1 for i in ids):
        raise ApiError(400, "billers: expected BillerIds from 1 to 2147483647", "billers")
    if len(ids) > MAX_IN_LIST:
        raise ApiError(400, f"billers: at most {MAX_IN_LIST} BillerIds", "billers")
    return tuple(ids)


def scoped(who, object_name: str, billers: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """The billers the export reads: those asked, within the token's scope (403 outside it)."""
    obj = published(object_name)
    if billers is not None and obj.entity_column is None:
        raise ApiError(400, f"billers: {object_name} is not per biller", "billers")
    if who.billers is None:
        return billers
    if obj.entity_column is None:
        raise ApiError(403, f"objectName: this token may not read {object_name}", "objectName")
    if billers is None:
        if len(who.billers) > MAX_IN_LIST:
            raise ApiError(400, f"billers: name at most {MAX_IN_LIST} BillerIds", "billers")
        return tuple(sorted(who.billers))
    refused = [b for b in billers if not who.can_read(b)]
    if refused:
        raise ApiError(403, f"billers: this token may not read biller {refused[0]}", "billers")
    return billers


def page_response(page: Page, fmt: str) -> Response:
    headers = {"Cache-Control": "no-store", "Export-Task-Id": page.task_id}
    headers["Export-Page"] = str(page.number)
    if page.next_token is not None:
        headers["Continuation-Token"] = page.next_token
    return Response(page.body, media_type=MEDIA_TYPES[fmt], headers=headers)


@router.get(
    "/api/v2/exports/{objectName}",
    response_model=ExportPage,
    responses={
        **EXPORT_ERRORS,
        200: {
            "description": "A page of rows; `Continuation-Token` names the next page",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
    },
)
async def export(
    who: Caller,
    state: State,
    objectName: Annotated[
        str,
        PathParam(
            max_length=128,
            description="A published table: " + ", ".join(PUBLISHED),
            json_schema_extra={"enum": list(PUBLISHED)},
        ),
    ],
    fromDate: Annotated[
        str,
        Query(
            max_length=64,
            description=f"Rows from this time (inclusive), ISO 8601; {RANGE_NOTE}",
            json_schema_extra={"pattern": TIME_PATTERN},
        ),
    ],
    toDate: Annotated[
        str,
        Query(
            max_length=64,
            description=f"Rows before this time (exclusive), ISO 8601; {RANGE_NOTE}",
            json_schema_extra={"pattern": TIME_PATTERN},
        ),
    ],
    billers: Annotated[
        str | None,
        Query(
            max_length=6000,
            description="Comma-separated BillerIds (default: all readable)",
            json_schema_extra={
                "pattern": rf"^[1-9]\d{{0,8}}(,[1-9]\d{{0,8}}){{0,{MAX_IN_LIST - 1}}}$"
            },
        ),
    ] = None,
    pageSize: Annotated[
        int,
        Query(ge=1, le=10_000, description="Rows per page (at most 10000)"),
    ] = 1000,
    format: Annotated[Literal["json", "csv"], Query(description="json or csv")] = "json",
    continuationToken: Annotated[
        str | None, Query(max_length=1024, description="From the previous page")
    ] = None,
    continuation_token: Annotated[
        str | None,
        Header(alias="continuation-token", max_length=1024, description="Or in this header"),
    ] = None,
) -> Response:
    """A published table over a time window, page by page from a snapshot taken at the first
    call. The first call answers page 1 and a continuation token; the same URL with the token
    answers the next page; the same token again answers the same page."""
    if published(objectName) is None:
        raise ApiError(
            404,
            f"objectName: unknown object {objectName[:60]!r} (published: {', '.join(PUBLISHED)})",
            "objectName",
        )
    start, end = parse_time(fromDate, "fromDate"), parse_time(toDate, "toDate")
    if start >= end:
        raise ApiError(400, "fromDate: must be before toDate", "fromDate")
    query = ExportQuery(
        objectName, start, end, scoped(who, objectName, parse_billers(billers)), pageSize, format
    )
    token = continuationToken or continuation_token
    exports = state.exports
    if token is None:
        page = await run_in_threadpool(exports.start, who, query)
    else:
        page = await run_in_threadpool(exports.next_page, who, query, token)
    return page_response(page, format)


TaskId = Annotated[str, PathParam(max_length=64, description="The task_id of an export")]


@router.get("/api/v2/exports-status", response_model=ExportQueues, responses=ERRORS)
async def exports_status(who: Caller, state: State) -> Response:
    """The export tasks the caller started (an all-billers token's too: only its own), in their
    four queues."""
    return json_response(await run_in_threadpool(state.exports.status, who))


@router.get("/api/v2/exports-status/{task_id}", response_model=ExportTask, responses=TASK_ERRORS)
async def export_status(who: Caller, state: State, task_id: TaskId) -> Response:
    """One task, with its events in order."""
    return json_response(await run_in_threadpool(state.exports.task, who, task_id))


@router.delete("/api/v2/exports-status/{task_id}", response_model=ExportTask, responses=TASK_ERRORS)
async def cancel_export(who: Caller, state: State, task_id: TaskId) -> Response:
    """Cancel the task: fetch-ahead stops before its next page and its cache is freed; asking
    again is harmless."""
    return json_response(await run_in_threadpool(state.exports.cancel, who, task_id))
