"""Pure ASGI middleware (no BaseHTTPMiddleware: no extra task per request, streaming intact):
the body size limit, and the per-request observability (request id, metrics by route template,
the access log line)."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.serving.http_errors import error_response
from app.serving.logging import ACCESS_LOGGER, request_id_var
from app.serving.metrics import Metrics

access_log = logging.getLogger(ACCESS_LOGGER)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class BodyTooLarge(StarletteHTTPException):
    """Raised from `receive` when the streamed body passes the limit; FastAPI re-raises HTTP
    exceptions met while reading the body, so it reaches the JSON error handler."""

    def __init__(self) -> None:
        super().__init__(413, "request body too large")


class BodyLimitMiddleware:
    """Pure ASGI: refuse bodies over MAX_BODY_BYTES, by Content-Length before reading anything,
    and by counting the bytes of bodies streamed without (or with a lying) Content-Length.
    (FastAPI's own max_body_size answers in plain text, bypassing our error format.)"""

    def __init__(self, app: ASGIApp, limit: int, metrics: Metrics):
        self.app = app
        self.limit = limit
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            self.metrics.rejected.labels("body_too_large").inc()
            message = f"request body is larger than {self.limit} bytes"
            await error_response(413, "body_too_large", message)(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge()
            return message

        await self.app(scope, counting_receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class ObservabilityMiddleware:
    """Pure ASGI: request id, in-flight gauge, request and predict-text counters and duration by
    route template, and the access log line; once per HTTP request, whatever the outcome."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: list):
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.metrics
        started = time.perf_counter()
        rid = _request_id(scope)
        token = request_id_var.set(rid)
        status = 500
        metrics.inflight.inc()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            metrics.inflight.dec()
            elapsed = time.perf_counter() - started
            route = self._template(scope)
            metrics.requests_total.labels(route, scope["method"], str(status)).inc()
            metrics.request_duration.labels(route).observe(elapsed)
            info = scope.get("state", {})
            if "texts" in info:  # set by the predict routes once the body parsed
                metrics.predict_texts.labels(route, str(status)).inc(info["texts"])
            extra = {
                "request_id": rid,
                "method": scope["method"],
                "route": route,
                "path": scope.get("path", ""),
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
            }
            keys = ("text_chars", "schema_nodes", "items", "cost_estimate", "cost_tokens")
            for key in (*keys, "cost_rows", "cancelled", "text"):
                if key in info:
                    extra[key] = info[key]
            access_log.info("request", extra=extra)
            request_id_var.reset(token)

    def _template(self, scope: Scope) -> str:
        """The matched route's path template (bounded label values), also for requests refused
        before routing; anything else is `unmatched`."""
        route = scope.get("route")
        if route is None:
            for candidate in self.routes:
                match, _ = candidate.matches(scope)
                if match is Match.FULL:
                    route = candidate
                    break
        return getattr(route, "path", None) or "unmatched"


def _request_id(scope: Scope) -> str:
    candidate = _header(scope, b"x-request-id")
    if candidate is not None and _REQUEST_ID.match(candidate):
        return candidate
    return uuid.uuid4().hex
