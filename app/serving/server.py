"""The HTTP layer: create_app(settings) builds the FastAPI app, serve() runs it under uvicorn.

Thin on purpose: requests are validated and turned into batcher jobs; app/serving/batching.py runs
the
model; errors of every kind become `{"error": {"code", "message"}}` in one place
(app/serving/http_errors.py). Readiness is a flag: false while the model loads and warms up,
true once it answers, false again from the moment a shutdown starts.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import __version__
from app.model.errors import InputError, SchemaError, TooComplex, UninluError
from app.model.examples import load_examples
from app.model.pipeline import parse_schema
from app.serving.batching import (
    Batcher,
    DeadlineExceeded,
    Job,
    NotAccepting,
    Overloaded,
    ShuttingDown,
)
from app.serving.cost import CostEstimate, estimate_cost
from app.serving.http_errors import ApiError, error_response, install_error_handlers
from app.serving.logging import configure_logging
from app.serving.metrics import Metrics
from app.serving.middleware import BodyLimitMiddleware, ObservabilityMiddleware
from app.serving.schemas import (
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    ExamplesResponse,
    HealthResponse,
    PredictRequest,
    PredictResponse,
    ReadyResponse,
)
from app.serving.settings import Settings, SettingsError
from app.serving.speed import BackendSpeed, SlowedBackend

log = logging.getLogger("uninlu.server")

STATIC_DIR = Path(__file__).parent / "static"
# Warm-up: a nested schema covers both pipeline levels, output_all_prefix the inner chains.
_WARMUP_FLAT = {"人物": None, "地点": None, "组织机构": None}
_WARMUP_NESTED = {"人物": {"地点": None, "时间": None}}

Loader = Callable[[Settings], tuple[Any, Any]]
TIMEOUT_HEADER = "x-request-timeout"


class Admission:
    """Cost estimates (app/serving/cost.py) off the event loop, on one dedicated thread with its
    own copy
    of the tokenizer: a fast tokenizer must not be shared between threads, and the worker's is
    busy with inference."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = copy.deepcopy(tokenizer)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="admission")

    async def estimate(self, job: Job) -> CostEstimate:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.pool, estimate_cost, self.tokenizer, job.text, job.schema
        )

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class ServerState:
    """What the routes need: settings, metrics, the batcher once loaded, and the two flags."""

    settings: Settings
    metrics: Metrics
    batcher: Batcher | None = None
    admission: Admission | None = None
    ready: bool = False
    draining: bool = False
    failed: BaseException | None = None
    loop: asyncio.AbstractEventLoop | None = None

    def begin_drain(self, from_signal: bool = False) -> None:
        """Readiness 503 and no new predictions, at once. From a signal handler only flags are
        set; the gauge, the log line (which take locks) and the in-flight requests' drain
        follow on the event loop. From a signal, every admitted request has its answer within
        the shutdown budget (app/contract/shutdown.py, answer_deadline): the batcher answers at
        once, 503, those that cannot finish by then."""
        first = not self.draining
        self.draining = True
        self.ready = False
        if self.batcher is not None:
            self.batcher.stop_admitting()
        if first and from_signal and self.loop is not None:
            answer_by = time.monotonic() + self.settings.shutdown_budget.answer_deadline
            self.loop.call_soon_threadsafe(self._announce_drain, answer_by)
        elif first:
            self._announce_drain()

    def _announce_drain(self, answer_by: float | None = None) -> None:
        self.metrics.model_ready.set(0)
        log.info("draining: /ready now answers 503 and new predictions are refused")
        if answer_by is not None and self.batcher is not None:
            self.batcher.drain(answer_by)


def apply_thread_settings(settings: Settings, environ: dict | None = None) -> bool:
    """Hand OMP_WAIT_POLICY to torch's OpenMP runtime, which reads it once, when torch loads
    (serve() runs before any model import). False, with a warning, when torch is already loaded
    and the setting cannot take effect in this process."""
    environ = os.environ if environ is None else environ
    environ["OMP_WAIT_POLICY"] = settings.omp_wait_policy
    if "torch" in sys.modules:
        log.warning("torch was loaded before the thread settings: OMP_WAIT_POLICY has no effect")
        return False
    return True


def default_loader(settings: Settings) -> tuple[Any, Any]:
    if settings.backend in ("onnx", "onnx-int8"):  # never imports torch (the lean CPU image)
        from app.runtime.onnx_backend import load_onnx_backend

        return load_onnx_backend(
            settings.model_path,
            settings.torch_threads,
            int8=settings.backend == "onnx-int8",
            spinning=settings.intra_op_spinning,
        )
    from app.runtime.torch_backend import (
        load_backend,  # torch is imported only when a model is loaded
    )

    return load_backend(
        settings.model_path,
        settings.device,
        settings.torch_threads,
        kind=settings.backend,
    )


def create_app(settings: Settings, loader: Loader = default_loader) -> FastAPI:
    """A fresh app with its own metrics registry; the model loads in the background at start."""
    state = ServerState(settings, Metrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.loop = asyncio.get_running_loop()
        log.info("settings", extra={"settings": settings.describe()})
        loading = asyncio.create_task(_load_and_warm_up(state, loader))
        try:
            yield
        finally:
            state.begin_drain()
            loading.cancel()
            if state.batcher is not None:
                await state.batcher.close(timeout=settings.shutdown_budget.batcher_close)
            if state.admission is not None:
                state.admission.close()
            log.info("stopped")

    # FastAPIOffline serves /docs and /redoc from bundled files: clusters are often air-gapped.
    app = FastAPIOffline(
        title="uninlu",
        version=__version__,
        summary="SiameseUniNLU: one model for NER, relations, events, sentiment, "
        "classification and reading comprehension, driven by a schema.",
        lifespan=lifespan,
    )
    app.state.uninlu = state
    install_error_handlers(app, state.metrics, settings.max_body_bytes)
    _add_routes(app, state)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes, metrics=state.metrics)
    app.add_middleware(ObservabilityMiddleware, metrics=state.metrics, routes=app.router.routes)
    return app


async def _load_and_warm_up(state: ServerState, loader: Loader) -> None:
    """Load off the event loop (so /health answers meanwhile), warm up, then turn ready."""
    settings, metrics = state.settings, state.metrics
    try:
        started = time.perf_counter()
        backend, tokenizer = await asyncio.to_thread(loader, settings)
        load_seconds = time.perf_counter() - started
        metrics.model_load_seconds.set(load_seconds)
        if settings.recorded_speed is not None:  # TEST_BACKEND_SECONDS_PER_TOKEN: tests only
            log.warning("TEST_BACKEND_SECONDS_PER_TOKEN is set: the backend is slowed on purpose")
            backend = SlowedBackend(backend, settings.recorded_speed)
        batcher = Batcher(
            backend,
            tokenizer,
            max_batch_tokens=settings.max_batch_tokens,
            batch_wait_ms=settings.batch_wait_ms,
            max_batch_requests=settings.max_batch_requests,
            max_queue=settings.max_queue,
            max_prompt_rows=settings.max_prompt_rows,
            max_request_cost=settings.max_request_cost,
            round_budget_ms=settings.round_budget_ms,
            metrics=metrics,
            speed=BackendSpeed(recorded=settings.recorded_speed),
        )
        batcher.start()
        state.admission = Admission(tokenizer)
        state.batcher = batcher
        if state.draining:
            batcher.stop_admitting()
            return
        started = time.perf_counter()
        # Twice: the first pass pays the runtime's one-off start-up work, the second measures
        # the speed the scheduler starts from (app/serving/speed.py).
        for measure in (False, True):
            if measure:
                batcher.speed.forget()
            warmup = _warmup_jobs(settings)
            for i in range(0, len(warmup), settings.max_queue):  # within MAX_QUEUE, even 1
                await batcher.predict_many(warmup[i : i + settings.max_queue])
        warmup_seconds = time.perf_counter() - started
        model = Path(settings.model_path).name or settings.model_path
        metrics.build_info.labels(__version__, model, backend.name).set(1)
        if state.draining:
            return
        state.ready = True
        metrics.model_ready.set(1)
        log.info(
            "ready",
            extra={
                "model_load_seconds": round(load_seconds, 3),
                "warmup_seconds": round(warmup_seconds, 3),
                "backend": backend.name,
                "ms_per_1000_tokens": batcher.speed.describe(),
            },
        )
    except asyncio.CancelledError:
        raise
    except UninluError as err:  # a bad checkpoint: the message says it all, no traceback
        state.failed = err
        log.error("model load failed: %s", err)
    except Exception as err:
        state.failed = err
        log.exception("model load or warm-up failed: %s", err)


def _warmup_jobs(settings: Settings) -> list[Job]:
    """Every code path once: flat and nested schemas, inner chains, a text long enough for several
    windows, and several requests sharing a batch."""
    text = settings.warmup_text[: settings.max_text_chars]
    # Two windows of 384 tokens; a flat schema, because a random test checkpoint finds spans
    # everywhere and a nested level over hundreds of them would make the warm-up slow.
    long_text = (text * math.ceil(500 / max(len(text), 1)))[: settings.max_text_chars]
    return [
        Job(text, _WARMUP_FLAT),
        Job(text, _WARMUP_NESTED, output_all_prefix=True),
        Job(long_text, _WARMUP_FLAT),
        Job(text[: max(1, len(text) // 2)], _WARMUP_NESTED),
    ]


# ------------------------------------------------------------------------------------ routes

_ERRORS = {
    413: {"model": ErrorResponse, "description": "Text, body or batch too large"},
    422: {
        "model": ErrorResponse,
        "description": "Invalid body, schema or X-Request-Timeout, or too complex (over "
        "MAX_REQUEST_COST)",
    },
    429: {"model": ErrorResponse, "description": "Overloaded; retry after `Retry-After` s"},
    503: {"model": ErrorResponse, "description": "Not ready yet, or shutting down"},
    504: {"model": ErrorResponse, "description": "Not finished within the request's time limit"},
}


def _add_routes(app: FastAPI, state: ServerState) -> None:
    settings = state.settings

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    examples = ExamplesResponse(examples=load_examples())  # read and checked once, at start

    @app.get("/examples", response_model=ExamplesResponse, summary="Example requests")
    async def get_examples() -> ExamplesResponse:
        """One example request per task type (app/model/examples.json): the web page's picker."""
        return examples

    @app.get("/health", response_model=HealthResponse, summary="Liveness")
    async def health() -> HealthResponse:
        """200 while the process serves, loaded or not."""
        return HealthResponse()

    @app.get(
        "/ready",
        response_model=ReadyResponse,
        summary="Readiness",
        responses={503: {"model": ErrorResponse, "description": "Loading or shutting down"}},
    )
    async def ready() -> Any:
        """200 once the model is loaded and warmed up; 503 before that and while draining."""
        if state.ready:
            return ReadyResponse()
        code, message = _not_ready(state)
        return error_response(503, code, message)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/predict", response_model=PredictResponse, responses=_ERRORS, summary="Extract")
    async def predict(body: PredictRequest, request: Request) -> PredictResponse:
        """Extract what the schema asks for from one text. Header `X-Request-Timeout: <seconds>`
        asks for a shorter time limit than the server's REQUEST_TIMEOUT_SECONDS."""
        request.state.texts = 1  # counted whatever the answer (uninlu_predict_texts_total)
        limit = _time_limit(request, settings)
        job = _to_job(body, settings, where="")
        request.state.text_chars = len(job.text)
        request.state.schema_nodes = _count_nodes(job.schema)
        if settings.log_request_text:
            request.state.text = job.text
        (output,) = await _run(state, [job], request, limit)
        return PredictResponse(output=output)

    @app.post(
        "/predict/batch", response_model=BatchResponse, responses=_ERRORS, summary="Extract many"
    )
    async def predict_batch(body: BatchRequest, request: Request) -> BatchResponse:
        """Several texts (each with its own schema) in one call; results in item order. The time
        limit (and X-Request-Timeout) applies to the whole batch."""
        request.state.texts = len(body.items)  # counted whatever the answer, even a 413
        limit = _time_limit(request, settings)
        if len(body.items) > settings.max_batch_items:
            raise ApiError(
                413,
                "too_many_items",
                f"batch has {len(body.items)} items; the limit is {settings.max_batch_items}",
            )
        jobs = [_to_job(item, settings, where=f"items[{i}]: ") for i, item in enumerate(body.items)]
        request.state.text_chars = sum(len(j.text) for j in jobs)
        request.state.schema_nodes = sum(_count_nodes(j.schema) for j in jobs)
        request.state.items = len(jobs)
        outputs = await _run(state, jobs, request, limit)
        return BatchResponse(results=[PredictResponse(output=o) for o in outputs])


def _to_job(body: PredictRequest, settings: Settings, where: str) -> Job:
    if len(body.text) > settings.max_text_chars:
        raise ApiError(
            413,
            "text_too_long",
            f"{where}text has {len(body.text)} characters; the limit is {settings.max_text_chars}",
        )
    if not _is_unicode(body.text):
        raise ApiError(422, "invalid_request", f"{where}text is not valid Unicode (lone surrogate)")
    try:
        schema = parse_schema(body.schema_, settings.max_schema_depth, settings.max_schema_nodes)
    except SchemaError as err:
        raise ApiError(422, "invalid_schema", f"{where}{err}") from None
    if not _is_unicode(json.dumps(schema, ensure_ascii=False)):
        raise ApiError(
            422,
            "invalid_schema",
            f"{where}schema type names are not valid Unicode (lone surrogate)",
        )
    return Job(body.text, schema, body.output_all_prefix)


def _is_unicode(text: str) -> bool:
    """JSON's \\ud800 escapes can smuggle lone surrogates into a str; the tokenizer cannot take
    them, and they are user input, so they must be a 422, not a 500."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _count_nodes(schema: dict | None) -> int:
    return sum(1 + _count_nodes(v) for v in schema.values()) if schema else 0


def _not_ready(state: ServerState) -> tuple[str, str]:
    if state.draining:
        return "shutting_down", "the server is shutting down"
    if state.failed is not None:
        return "not_ready", "the model failed to load; see the server log"
    return "not_ready", "the model is still loading"


def _time_limit(request: Request, settings: Settings) -> float:
    """The request's time limit in seconds: REQUEST_TIMEOUT_SECONDS, or less if the client asks
    for less with X-Request-Timeout (a larger value is capped; a bad one is a 422)."""
    server = settings.request_timeout_seconds
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return server
    try:
        asked = float(raw)
    except ValueError:
        asked = math.nan
    if not 0 < asked < math.inf:
        raise ApiError(
            422,
            "invalid_request",
            f"X-Request-Timeout must be a positive number of seconds, got {raw[:40]!r}",
        )
    return min(asked, server)


async def _admit(state: ServerState, jobs: list[Job], request: Request) -> list[Job]:
    """Estimate each job's cost before any compute; one certainly above MAX_REQUEST_COST makes
    the request a 422 too_complex naming the estimate and the limit."""
    assert state.admission is not None
    limit = state.settings.max_request_cost
    admitted = []
    for i, job in enumerate(jobs):
        estimate = await state.admission.estimate(job)
        if estimate.cost > limit:
            where = f"items[{i}]: " if len(jobs) > 1 else ""
            raise ApiError(422, "too_complex", where + str(TooComplex.cost(estimate.cost, limit)))
        admitted.append(
            dataclasses.replace(job, estimated_cost=estimate.cost, estimated_encode=estimate.encode)
        )
    request.state.cost_estimate = sum(j.estimated_cost or 0 for j in admitted)
    return admitted


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects: once the body is read, the next ASGI message is
    `http.disconnect` (uvicorn sends it when the connection closes)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _run(state: ServerState, jobs: list[Job], request: Request, limit: float) -> list[list]:
    """Admit, then wait for the outputs until the time limit passes (504) or the client goes
    away (499); either way the jobs' remaining steps are dropped by the batcher. Refused at
    admission (429, 503, a 504 at once): the jobs' estimated cost counts as refused work."""
    deadline = time.monotonic() + limit
    if not state.ready or state.batcher is None:
        raise ApiError(503, *_not_ready(state))
    jobs = await _admit(state, jobs, request)
    settings = state.settings
    prediction = asyncio.ensure_future(state.batcher.predict_many(jobs, deadline))
    watcher = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait((prediction, watcher), return_when=asyncio.FIRST_COMPLETED)
        if not prediction.done():
            prediction.cancel()
            with suppress(asyncio.CancelledError):
                await prediction
            request.state.cancelled = "client_disconnected"
            raise ApiError(
                499, "client_disconnected", "the client closed the connection; request cancelled"
            )
        return prediction.result()
    except Overloaded as err:
        _refused(state, jobs, err.reason)
        raise ApiError(
            429,
            "overloaded",
            str(err),
            headers={"Retry-After": str(err.retry_after)},
            reason=err.reason,
        ) from None
    except NotAccepting:
        _refused(state, jobs, "shutting_down")
        raise ApiError(
            503, "shutting_down", "the server is shutting down", headers={"Retry-After": "1"}
        ) from None
    except ShuttingDown as err:
        request.state.cancelled = "shutting_down"
        raise ApiError(
            503,
            "shutting_down",
            "the server is shutting down and the request could not finish within its shutdown "
            "budget; it was cancelled: retry (another instance will take it)",
            headers={"Retry-After": str(err.retry_after)},
        ) from None
    except DeadlineExceeded as err:
        request.state.cancelled = "deadline_exceeded"
        server_limit = (
            f"(server limit REQUEST_TIMEOUT_SECONDS={settings.request_timeout_seconds:g}; "
            "a client may ask for less with X-Request-Timeout)"
        )
        if not err.early:
            message = (
                f"the request did not finish within its time limit of {limit:g} s and was "
                f"cancelled {server_limit}"
            )
        else:
            if not any(j.usage.tokens for j in jobs):
                _refused(state, jobs, "deadline_exceeded")
            message = (
                f"the request cannot finish within its time limit of {limit:g} s at this "
                f"server's measured speed (about {err.left_s or 0:.1f} s of model work left) "
                f"and was stopped early {server_limit}"
            )
        raise ApiError(504, "deadline_exceeded", message) from None
    except TooComplex as err:
        raise ApiError(422, "too_complex", str(err)) from None
    except (SchemaError, InputError) as err:
        raise ApiError(422, "invalid_request", str(err)) from None
    finally:
        watcher.cancel()
        request.state.cost_tokens = sum(j.usage.tokens for j in jobs)
        request.state.cost_rows = sum(j.usage.rows for j in jobs)


def _refused(state: ServerState, jobs: list[Job], reason: str) -> None:
    """Count the estimated model tokens of predictions refused before any compute."""
    state.metrics.refused_tokens.labels(reason).inc(sum(j.estimated_cost or 0 for j in jobs))


# ------------------------------------------------------------------------------------ serving


class _DrainingServer(uvicorn.Server):
    """uvicorn.Server that flips readiness at the first SIGTERM/SIGINT, optionally keeps serving
    for the drain delay (so load balancers see /ready fail), and exits if the model failed."""

    def __init__(self, config: uvicorn.Config, state: ServerState):
        super().__init__(config)
        self.state = state
        self.exit_after: float | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.exit_after is None:
            self.state.begin_drain(from_signal=True)
            self.exit_after = time.monotonic() + self.state.settings.drain_delay_seconds
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.state.failed is not None:
            return True
        should_exit = await super().on_tick(counter)
        if should_exit and self.exit_after is not None and not self.force_exit:
            return time.monotonic() >= self.exit_after
        return should_exit


def serve(settings: Settings | None = None) -> int:
    """`python -m app`: settings from the environment, JSON logs, uvicorn on settings.port."""
    if settings is None:
        try:
            settings = Settings.from_env()
        except SettingsError as err:
            print(f"uninlu: invalid setting: {err}", file=sys.stderr)
            return 2
    configure_logging(settings)
    apply_thread_settings(settings)
    if not settings.model_path:
        log.error("MODEL_PATH is not set: point it at a checkpoint directory")
        return 2
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,  # ObservabilityMiddleware writes the access line
        timeout_graceful_shutdown=settings.shutdown_budget.http_graceful,
        lifespan="on",
        proxy_headers=False,
    )
    server = _DrainingServer(config, app.state.uninlu)
    server.run()
    if app.state.uninlu.failed is not None:
        return 1
    return 0
