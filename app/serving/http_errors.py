"""The one place where failures become HTTP answers: `{"error": {"code", "message"}}` with the
right status, and rejections counted by cause in uninlu_rejected_total."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.serving.metrics import Metrics
from app.serving.schemas import ErrorResponse

log = logging.getLogger("uninlu.server")


class ApiError(Exception):
    """An HTTP answer other than 200: status, machine code, human message, optional headers, and
    the reason label of uninlu_rejected_total when it is not the code's (REJECT_REASON)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict | None = None,
        reason: str | None = None,
    ):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers
        self.reason = reason


# The reason label of uninlu_rejected_total for each refusal code (bounded, see REJECT_REASONS).
REJECT_REASON = {
    "overloaded": "queue_full",
    "not_ready": "not_ready",
    "shutting_down": "shutting_down",
    "text_too_long": "text_too_long",
    "body_too_large": "body_too_large",
    "too_many_items": "too_many_items",
    "invalid_request": "invalid_request",
    "invalid_schema": "invalid_request",
    "invalid_json": "invalid_request",
    "too_complex": "too_complex",
    "deadline_exceeded": "deadline_exceeded",
    "client_disconnected": "client_disconnected",
}


def error_response(status: int, code: str, message: str, headers: dict | None = None):
    body = ErrorResponse(error={"code": code, "message": message}).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI, metrics: Metrics, max_body_bytes: int) -> None:
    """The one place where failures become status codes."""

    def reject(
        status: int, code: str, message: str, headers: dict | None = None, reason: str | None = None
    ):
        reason = reason or REJECT_REASON.get(code)
        if reason:
            metrics.rejected.labels(reason).inc()
        return error_response(status, code, message, headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return reject(err.status, err.code, err.message, err.headers, err.reason)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = [_describe_validation(e) for e in err.errors()[:5]]
        json_broken = any(e.get("type") == "json_invalid" for e in err.errors())
        code = "invalid_json" if json_broken else "invalid_request"
        return reject(422, code, "; ".join(problems) or "invalid request body")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        if err.status_code == 413:
            message = f"request body is larger than {max_body_bytes} bytes"
            return reject(413, "body_too_large", message)
        if err.status_code == 400:  # the body could not be parsed at all (e.g. nested too deep)
            return reject(422, "invalid_json", "request body is not valid JSON")
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return error_response(err.status_code, code, str(err.detail), err.headers)

    @app.exception_handler(Exception)
    async def server_fault(request: Request, err: Exception) -> JSONResponse:
        log.error("unhandled error: %r", err, exc_info=err)
        return error_response(500, "internal_error", "internal server error")


def _describe_validation(error: dict) -> str:
    loc = [str(part) for part in error.get("loc", ()) if part != "body"]
    where = ".".join(loc)
    if error.get("type") == "json_invalid":
        return f"body is not valid JSON: {error.get('ctx', {}).get('error', 'decode error')}"
    if error.get("type") == "missing":
        return f"{where} is required"
    if error.get("type") == "extra_forbidden":
        return f"unknown field {where}"
    msg = error.get("msg", "is invalid")
    return f"{where}: {msg}" if where else msg
