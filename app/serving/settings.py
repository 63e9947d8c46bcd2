"""Server settings, read from the environment once (by the caller, never at import time).

Every setting is documented next to its field; `Settings.from_env()` parses and validates them and
`Settings.describe()` gives the start-up log line (nothing here is secret, so nothing is redacted).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.contract import shutdown
from app.model.pipeline import MAX_BATCH_TOKENS, MAX_PROMPT_ROWS, MAX_REQUEST_COST
from app.serving.batching import ROUND_BUDGET_MS
from app.serving.speed import STAGES

BACKENDS = ("torch", "onnx", "onnx-int8")

# Settings that were removed: set anyway, they stop start-up with what the server does now.
REMOVED = {
    "SCHEDULER": "the batcher always serves the request with the least work so far first "
    "(least attained), in rounds of ROUND_BUDGET_MS; unset SCHEDULER",
    "SLICE_TOKENS": "rounds are bounded in time, not in model tokens: set ROUND_BUDGET_MS "
    "(milliseconds of backend work per scheduling round, sized from the measured speed) and "
    "unset SLICE_TOKENS",
    "THREAD_TUNING": "torch always runs TORCH_THREADS intra-op threads (what THREAD_TUNING=fixed "
    "did); unset THREAD_TUNING",
}
# Values that were removed, with what to use instead.
REMOVED_BACKENDS = {"torch-int8": "onnx-int8"}

_POSITIVE = (
    "port",
    "max_text_chars",
    "max_schema_nodes",
    "max_schema_depth",
    "max_body_bytes",
    "max_batch_items",
    "max_prompt_rows",
    "max_batch_tokens",
    "max_batch_requests",
    "max_queue",
    "max_request_cost",
)


class SettingsError(ValueError):
    """An environment variable has a value the server cannot use (the message names it)."""


def _setting(default: Any, env: str, doc: str) -> Any:
    return field(default=default, metadata={"env": env, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """What one server process needs to know; tests build it directly, `python -m app` from env."""

    model_path: str = _setting("", "MODEL_PATH", "checkpoint directory (config.json, vocab.txt, …)")
    host: str = _setting("0.0.0.0", "HOST", "interface uvicorn binds (0.0.0.0 inside a pod)")
    port: int = _setting(7860, "PORT", "HTTP port of the API, the web page and /metrics")
    warmup_text: str = _setting(
        "今天上午，小林在杭州西湖边买了两杯龙井茶。",
        "WARMUP_TEXT",
        "text run through every code path (single, batch, nested schema) before /ready turns 200",
    )
    device: str = _setting("auto", "DEVICE", "auto | cpu | cuda (auto = cuda when available)")
    torch_threads: int | None = _setting(
        None, "TORCH_THREADS", "intra-op threads for torch; unset = torch's default (all cores)"
    )
    omp_wait_policy: str = _setting(
        "PASSIVE",
        "OMP_WAIT_POLICY",
        "ACTIVE | PASSIVE: how torch's OpenMP threads (GNU libgomp) wait between parallel regions; "
        "PASSIVE sleeps instead of spinning, so two threads do not collapse when another process "
        "holds one of the cores (measured under a CPU hog: 2.8 s per call against 12.4 s "
        "spinning); applied before torch loads",
    )
    intra_op_spinning: bool = _setting(
        False,
        "INTRA_OP_SPINNING",
        "ONNX Runtime intra-op threads spin while waiting for work "
        "(session.intra_op.allow_spinning); off: idle threads sleep, which keeps a busy or "
        "CPU-limited node from stealing the core the other thread waits for",
    )
    backend: str = _setting(
        "torch",
        "BACKEND",
        "torch | onnx | onnx-int8 (ONNX Runtime, graphs in MODEL_PATH/onnx "
        "from app/tools/export_onnx.py; TORCH_THREADS sets its threads too)",
    )
    max_text_chars: int = _setting(
        10000, "MAX_TEXT_CHARS", "longest accepted text in characters; longer -> 413"
    )
    max_schema_nodes: int = _setting(
        64, "MAX_SCHEMA_NODES", "most keys in one schema, all levels together; more -> 422"
    )
    max_schema_depth: int = _setting(
        4, "MAX_SCHEMA_DEPTH", "deepest nesting of schema objects; deeper -> 422"
    )
    max_body_bytes: int = _setting(
        2 * 1024 * 1024, "MAX_BODY_BYTES", "largest request body in bytes; larger -> 413"
    )
    max_batch_items: int = _setting(
        32, "MAX_BATCH_ITEMS", "most items in one POST /predict/batch; more -> 413"
    )
    max_prompt_rows: int = _setting(
        MAX_PROMPT_ROWS,
        "MAX_PROMPT_ROWS",
        "most prompt rows one request may run (types x text windows x spans found one level up); "
        "a nested schema over a text with many spans can explode, more -> 422 too_complex",
    )
    max_request_cost: int = _setting(
        MAX_REQUEST_COST,
        "MAX_REQUEST_COST",
        "most model tokens one prediction may cost (text windows x prompt rows, estimated from the "
        "text and the schema's first level at admission, enforced again before each nested "
        "level); more -> 422 too_complex. Default: what one pod computes in about 52 s "
        "(full-size int8, 2 cores), under REQUEST_TIMEOUT_SECONDS",
    )
    request_timeout_seconds: float = _setting(
        60.0,
        "REQUEST_TIMEOUT_SECONDS",
        "longest a prediction may take, queueing included; then a 504 and its remaining model "
        "steps are dropped. A client may ask for less with the X-Request-Timeout header",
    )
    round_budget_ms: float = _setting(
        ROUND_BUDGET_MS,
        "ROUND_BUDGET_MS",
        "backend time of one scheduling round, in ms: each round holds what the backend runs in "
        "about this long, by its measured seconds per model token, so a short request behind a "
        "long one waits about one round on any machine (smaller: fairer, more backend calls); "
        "one input that takes longer (a score row of a slow machine) makes a round alone",
    )
    max_batch_tokens: int = _setting(
        MAX_BATCH_TOKENS,
        "MAX_BATCH_TOKENS",
        "upper bound of one backend call: rows x padded length; bigger rounds are split",
    )
    batch_wait_ms: float = _setting(
        5.0,
        "BATCH_WAIT_MS",
        "how long an idle worker waits for more requests to join a new batch",
    )
    max_batch_requests: int = _setting(
        64,
        "MAX_BATCH_REQUESTS",
        "requests the worker drives at once; 1 = one at a time (cross-request batching off)",
    )
    max_queue: int = _setting(
        128,
        "MAX_QUEUE",
        "requests admitted at once (waiting + running; a batch item counts as one); more -> 429",
    )
    log_level: str = _setting("INFO", "LOG_LEVEL", "DEBUG | INFO | WARNING | ERROR")
    log_format: str = _setting("json", "LOG_FORMAT", "json (one object per line) | text (humans)")
    log_request_text: bool = _setting(
        False, "LOG_REQUEST_TEXT", "also log the request text (off: texts may be personal data)"
    )
    graceful_shutdown_seconds: int = _setting(
        shutdown.DEFAULT_GRACEFUL_SHUTDOWN_SECONDS,
        "GRACEFUL_SHUTDOWN_SECONDS",
        "the whole shutdown after SIGTERM: drain delay, then in-flight requests, then the "
        "batcher's close (app/contract/shutdown.py splits it; the pod's grace period covers it)",
    )
    test_backend_seconds_per_token: str = _setting(
        "",
        "TEST_BACKEND_SECONDS_PER_TOKEN",
        "TEST ONLY, never set in a deployment: 'ENCODE,SCORE' seconds per model token that the "
        "scheduler records for every backend call instead of the time it took, so that tests "
        "drive round sizes, admission and the drain deterministically; empty: measured",
    )
    drain_delay_seconds: float = _setting(
        0.0,
        "DRAIN_DELAY_SECONDS",
        "after SIGTERM, keep answering (/ready 503, new predictions 503) this long before closing "
        "the listener, so load balancers see the pod leave; part of GRACEFUL_SHUTDOWN_SECONDS",
    )

    def __post_init__(self) -> None:
        for name in _POSITIVE:
            if getattr(self, name) < 1:
                raise SettingsError(f"{_env(name)} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.request_timeout_seconds < float("inf"):
            raise SettingsError("REQUEST_TIMEOUT_SECONDS must be a positive number of seconds")
        if not 0 < self.round_budget_ms < float("inf"):
            raise SettingsError("ROUND_BUDGET_MS must be a positive number of milliseconds")
        self.recorded_speed  # noqa: B018 - validates TEST_BACKEND_SECONDS_PER_TOKEN
        for name in ("batch_wait_ms", "graceful_shutdown_seconds", "drain_delay_seconds"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{_env(name)} must not be negative")
        try:
            shutdown.split(self.graceful_shutdown_seconds, self.drain_delay_seconds)
        except shutdown.ShutdownBudgetError as err:
            raise SettingsError(str(err)) from None
        if self.max_batch_items > self.max_queue:
            raise SettingsError(
                "MAX_BATCH_ITEMS must not exceed MAX_QUEUE (such a batch never fits)"
            )
        if self.torch_threads is not None and self.torch_threads < 1:
            raise SettingsError("TORCH_THREADS must be at least 1")
        if self.backend not in BACKENDS:
            accepted = f"BACKEND must be one of {', '.join(BACKENDS)}"
            if self.backend in REMOVED_BACKENDS:
                raise SettingsError(
                    f"{accepted} ({self.backend} was removed: use {REMOVED_BACKENDS[self.backend]})"
                )
            raise SettingsError(f"{accepted}, got {self.backend!r}")
        if self.omp_wait_policy not in ("ACTIVE", "PASSIVE"):
            raise SettingsError(
                f"OMP_WAIT_POLICY must be ACTIVE or PASSIVE, got {self.omp_wait_policy!r}"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise SettingsError(f"DEVICE must be auto, cpu or cuda, got {self.device!r}")
        if self.log_format not in ("json", "text"):
            raise SettingsError(f"LOG_FORMAT must be json or text, got {self.log_format!r}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise SettingsError(f"LOG_LEVEL {self.log_level!r} is not a logging level")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build from environment variables; unset ones keep their defaults, and a removed one
        (REMOVED) set to anything is an error."""
        environ = os.environ if environ is None else environ
        for env, now in REMOVED.items():
            if environ.get(env, "").strip():
                raise SettingsError(f"{env} was removed: {now}")
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _parse(f, raw.strip())
        return cls(**values)

    @property
    def recorded_speed(self) -> dict[str, float] | None:
        """TEST_BACKEND_SECONDS_PER_TOKEN as {stage: seconds per token}; None when unset."""
        raw = self.test_backend_seconds_per_token.strip()
        if not raw:
            return None
        try:
            values = [float(v) for v in raw.split(",")]
        except ValueError:
            values = []
        if len(values) != len(STAGES) or not all(0 < v < float("inf") for v in values):
            raise SettingsError(
                "TEST_BACKEND_SECONDS_PER_TOKEN must be two positive numbers, 'ENCODE,SCORE' "
                f"seconds per model token, got {raw!r}"
            )
        return dict(zip(STAGES, values, strict=True))

    @property
    def shutdown_budget(self) -> shutdown.ShutdownBudget:
        """GRACEFUL_SHUTDOWN_SECONDS split into drain delay, HTTP drain and batcher close."""
        return shutdown.split(self.graceful_shutdown_seconds, self.drain_delay_seconds)

    def describe(self) -> dict[str, Any]:
        """Every setting by its environment name, for the start-up log line."""
        return {f.metadata["env"]: getattr(self, f.name) for f in dataclasses.fields(self)}


def _env(name: str) -> str:
    return Settings.__dataclass_fields__[name].metadata["env"]


def _parse(f: dataclasses.Field, raw: str) -> Any:
    kind = str(f.type)
    env = f.metadata["env"]
    try:
        if kind.startswith("bool"):
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError:
        raise SettingsError(f"{env}={raw!r} is not a valid {kind.split()[0]}") from None
    return raw
