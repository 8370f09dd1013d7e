"""Seed 003's activity monitoring at its own URLs, over the same export tasks as
``/api/v2/exports-status``:

- ``GET /api/integrations/v2/biviews-status``: the caller's tasks in their four queues;
- ``GET|DELETE /api/integrations/v2/biviews-status/{task_id}``: one task, or cancel it, where
  ``task_id`` is the continuation token returned with the first page, or the task id.
"""

from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from metrics_pipeline.api.deps import Caller, State
from metrics_pipeline.api.errors import ERRORS
from metrics_pipeline.api.exports.biviews import seed_task
from metrics_pipeline.api.models import BiviewsQueues, BiviewsTask
from metrics_pipeline.api.responses import json_response
from metrics_pipeline.api.routers.exports import TASK_ERRORS

router = APIRouter(tags=["exports"])

PREFIX = "/api/integrations/v2/biviews-status"

TaskRef = Annotated[
    str,
    PathParam(
        max_length=1024,
        description="The continuation token returned with the first page (or the task id)",
    ),
]


@router.get(PREFIX, response_model=BiviewsQueues, responses=ERRORS)
async def biviews_status(who: Caller, state: State) -> Response:
    """The export tasks the caller started, in the active, completed, draining and stale queues,
    in seed 003's fields."""
    return json_response(await run_in_threadpool(state.exports.status, who, seed_task))


@router.get(PREFIX + "/{task_id}", response_model=BiviewsTask, responses=TASK_ERRORS)
async def biviews_task(who: Caller, state: State, task_id: TaskRef) -> Response:
    """One task, by its first continuation token or its id, with its events in order."""
    exports = state.exports
    return json_response(
        await run_in_threadpool(lambda: exports.task(who, exports.resolve(task_id), seed_task))
    )


@router.delete(PREFIX + "/{task_id}", response_model=BiviewsTask, responses=TASK_ERRORS)
async def biviews_cancel(who: Caller, state: State, task_id: TaskRef) -> Response:
    """Cancel the task (as ``DELETE /api/v2/exports-status/{task_id}``); harmless again."""
    exports = state.exports
    return json_response(
        await run_in_threadpool(lambda: exports.cancel(who, exports.resolve(task_id), seed_task))
    )
