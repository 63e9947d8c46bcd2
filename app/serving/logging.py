"""Log set-up for the server: one JSON object per line (python-json-logger) or plain text.

This module shadows nothing: Python 3 imports are absolute, so `import logging` below is the
standard library even though this file is app/serving/logging.py.

Uvicorn's own access log is switched off (see app/serving/server.py serve()): the access line comes
from
our middleware instead, once per request, with the request id, route template, status, duration
and input sizes. Every record logged while a request is handled carries its `request_id`.
"""

from __future__ import annotations

import contextvars
import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from app.serving.settings import Settings

ACCESS_LOGGER = "uninlu.access"

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)


class _RequestContext(logging.Filter):
    """Adds the current request id to records and drops uvicorn's terminal-colour duplicate."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id_var.get()
        if rid is not None and not hasattr(record, "request_id"):
            record.request_id = rid
        if hasattr(record, "color_message"):
            del record.color_message
        return True


class _TextFormatter(logging.Formatter):
    """Human format: the message, then the structured extras as key=value."""

    _standard = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in record.__dict__.items() if k not in self._standard}
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


def configure_logging(settings: Settings) -> None:
    """Route the root logger (and so uvicorn's and ours) to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                json_ensure_ascii=False,
            )
        )
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_RequestContext())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
