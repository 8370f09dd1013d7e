"""The API's error answers: ``ApiError`` raised anywhere, and one JSON body shape for all of them,
``{"detail": "<parameter>: <what is wrong>", "parameter": "<parameter>" | null}``."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from metrics_pipeline.api.exports.store import StoreUnavailable

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A 4xx/5xx answer with a message (and the parameter it is about, when there is one)."""

    def __init__(
        self,
        status: int,
        message: str,
        parameter: str | None = None,
        headers=None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.parameter = status, message, parameter
        self.headers, self.code = headers, code


class ErrorBody(BaseModel):
    detail: str = Field(description="What went wrong, naming the parameter when one is at fault")
    parameter: str | None = Field(default=None, description="The parameter at fault, if any")


class LimitBody(ErrorBody):
    code: str = Field(description="Which limit: EXPORT_TASKS_LIMIT or EXPORT_CACHE_FULL")


#: The error answers most routes can give, for their OpenAPI ``responses``.
ERRORS = {
    400: {"model": ErrorBody, "description": "A parameter is invalid"},
    401: {"model": ErrorBody, "description": "No token, or an unknown token"},
    403: {"model": ErrorBody, "description": "The token may not read this biller"},
    503: {"model": ErrorBody, "description": "The warehouse does not answer"},
}
#: Routes with parameters add this: it replaces FastAPI's default 422 (a list of errors), which
#: is not what the validation handler below sends.
INVALID = {
    422: {"model": ErrorBody, "description": "A parameter is missing, of the wrong type or size"}
}


def error_response(
    status: int, message: str, parameter: str | None = None, headers=None, code=None
) -> JSONResponse:
    body = {"detail": message, "parameter": parameter}
    if code is not None:
        body["code"] = code
    return JSONResponse(
        body,
        status_code=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


async def _api_error(request: Request, exc: ApiError):
    return error_response(exc.status, exc.message, exc.parameter, exc.headers, exc.code)


async def _validation_error(request: Request, exc: RequestValidationError):
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("path", "query", "header")]
    parameter = ".".join(loc) or None
    message = first.get("msg", "invalid request")
    return error_response(422, f"{parameter}: {message}" if parameter else message, parameter)


async def _warehouse_error(request: Request, exc: SQLAlchemyError):
    log.error("warehouse error on %s: %s", request.url.path, exc)
    return error_response(503, "the warehouse is unavailable; try again later")


async def _store_error(request: Request, exc: StoreUnavailable):
    log.error("export store error on %s: %s", request.url.path, exc)
    return error_response(503, f"{exc}; try again later", headers={"Retry-After": "5"})


def install_error_handlers(app: FastAPI) -> None:
    """Every error the routes raise answers with the ErrorBody shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(SQLAlchemyError, _warehouse_error)
    app.add_exception_handler(StoreUnavailable, _store_error)
