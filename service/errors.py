"""Domain errors and their one mapping to HTTP.

Every error leaves the service as ``{"error": {"code", "message", "details"}}``::

    DomainError            status  code
    ├── NotFound            404    not_found         (also another owner's job: no existence leak)
    ├── IllegalTransition   409    illegal_transition (e.g. cancelling a finished job)
    ├── IdempotencyConflict 409    idempotency_conflict
    ├── NothingToPlot       409    no_finished_trials (a plot before any epoch was reported)
    ├── QuotaExceeded       429    quota_exceeded
    ├── SpecRejected        422    invalid_spec      (details: [{"loc", "msg"}])
    ├── InvalidParameter    422    invalid_parameter (a query parameter or header: cursor, after, Last-Event-ID)
    ├── InvalidJSON         422    validation_error  (a body that is not strict JSON: NaN/Infinity are refused)
    ├── Unauthorized        401    unauthorized
    ├── Forbidden           403    forbidden
    ├── PayloadTooLarge     413    payload_too_large
    └── Unavailable         503    unavailable
    RequestValidationError  422    validation_error
    a database error        503    store_unavailable (sqlalchemy OperationalError / InterfaceError; Retry-After)
    any other exception     500    internal_error    (details: {"error_id"}; the id is in the log with the traceback)
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.spec_errors import loc_to_path

logger = logging.getLogger("service.errors")


class DomainError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, details: Any = None, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers


class NotFound(DomainError):
    status_code, code = 404, "not_found"


class IllegalTransition(DomainError):
    status_code, code = 409, "illegal_transition"


class NothingToPlot(DomainError):
    status_code, code = 409, "no_finished_trials"


class PlotsUnavailable(DomainError):
    """The service was installed without matplotlib (the ``plots`` extra)."""

    status_code, code = 501, "plots_unavailable"


class NoModel(DomainError):
    status_code, code = 409, "no_model"


class IdempotencyConflict(DomainError):
    status_code, code = 409, "idempotency_conflict"


class QuotaExceeded(DomainError):
    status_code, code = 429, "quota_exceeded"


class SpecRejected(DomainError):
    status_code, code = 422, "invalid_spec"


class InvalidParameter(DomainError):
    status_code, code = 422, "invalid_parameter"


class InvalidJSON(DomainError):
    status_code, code = 422, "validation_error"


class Unauthorized(DomainError):
    status_code, code = 401, "unauthorized"


class Forbidden(DomainError):
    status_code, code = 403, "forbidden"


class PayloadTooLarge(DomainError):
    status_code, code = 413, "payload_too_large"


class Unavailable(DomainError):
    status_code, code = 503, "unavailable"


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "quota_exceeded",
    503: "unavailable",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.details), exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        from service.schemas import EVENT_TAGS  # late: schemas imports the store, which imports this module

        details = []
        for err in exc.errors():
            raw = list(err.get("loc", ()))
            # Drop the tags pydantic puts in a tagged union's loc ("events[0].epoch.trial_id" -> "events[0].trial_id").
            raw = [p for i, p in enumerate(raw) if not (p in EVENT_TAGS and i and isinstance(raw[i - 1], int))]
            loc = [p for p in raw if p not in ("body", "query", "path", "header")] or list(err["loc"])
            details.append({"loc": loc_to_path(loc), "msg": err.get("msg", ""), "type": err.get("type", "")})
        return JSONResponse(error_body("validation_error", "the request is invalid", details), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=getattr(exc, "headers", None))

    async def _store_down(request: Request, exc: Exception) -> JSONResponse:
        # The database went away (or stayed locked past its timeout): retryable, and nothing was half-written
        # (every store method is one transaction). Drivers keep their events in their spool and resend.
        logger.warning("the job store is unreachable on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            error_body("store_unavailable", "the job store is unreachable; retry later"),
            503,
            headers={"Retry-After": "5"},
        )

    app.add_exception_handler(sa_exc.OperationalError, _store_down)
    app.add_exception_handler(sa_exc.InterfaceError, _store_down)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:16]
        logger.error("unhandled error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc)
        return JSONResponse(  # the server drops the connection after a 500: say so
            error_body("internal_error", f"internal error (id {error_id})", {"error_id": error_id}),
            500,
            headers={"Connection": "close"},
        )
