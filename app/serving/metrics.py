"""Prometheus metrics: `Metrics` holds the series of one server; the names the Prometheus Adapter
rule and the chart's HPA rely on are in app/contract/metrics.py."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from app.contract.metrics import (
    LATENCY_BUCKETS,
    PREDICT_ROUTES,
    PREDICT_TEXTS_TOTAL,
    REQUESTS_TOTAL,
)

# Below: the metric objects of DESIGN.md §4. Each app gets its own registry, so tests can run
# several apps in one process and /metrics shows exactly this server's series.

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Bounded label values: the rejection causes the server can report.
REJECT_REASONS = (
    "queue_full",
    "not_ready",
    "shutting_down",
    "text_too_long",
    "body_too_large",
    "too_many_items",
    "invalid_request",
    "too_complex",
    "deadline_exceeded",  # 504: the request's time limit passed, or it could not fit it any more
    "predicted_late",  # 429: admitted, the backlog would have made it (or another) miss a deadline
    "client_disconnected",  # the client closed the connection first; remaining steps dropped
)
INFERENCE_STAGES = ("tokenize", "encode", "score", "decode")
BACKEND_STAGES = ("encode", "score")
TOKEN_KINDS = ("real", "padded")  # padded: positions of a padded call that hold no token
# Why tokens already sent to the backend were thrown away (the request ended without output).
WASTE_REASONS = (
    "deadline_exceeded",
    "client_disconnected",
    "shutting_down",
    "too_complex",
    "error",
)
# Why a prediction was refused at admission, before any compute (its estimate is counted).
REFUSE_REASONS = ("queue_full", "predicted_late", "deadline_exceeded", "shutting_down")
_ROUND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0)
_COST_BUCKETS = (100, 300, 1000, 3000, 10000, 20000, 40000, 80000, 160000, 400000)
_ROW_BUCKETS = (1, 4, 16, 64, 128, 256, 512, 1024, 2048, 4096)


class Metrics:
    """The server's Prometheus series in one per-app registry (names fixed by DESIGN.md §4)."""

    def __init__(self) -> None:
        disable_created_metrics()  # no *_created series: half the lines, nothing we use
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests_total = Counter(
            REQUESTS_TOTAL,
            "HTTP requests answered, by route template, method and status code",
            ("route", "method", "status"),
            registry=r,
        )
        self.predict_texts = Counter(
            PREDICT_TEXTS_TOTAL,
            "Texts in predict calls whose body parsed (a batch of n counts n), by route template "
            "and status code",
            ("route", "status"),
            registry=r,
        )
        self.request_duration = Histogram(
            "uninlu_request_duration_seconds",
            "Time from request start to the end of the response, by route template",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "uninlu_inflight_requests", "HTTP requests being handled now", registry=r
        )
        self.queue_depth = Gauge(
            "uninlu_queue_depth",
            "Predictions admitted to the batcher and not finished (waiting + running)",
            registry=r,
        )
        self.queue_wait = Histogram(
            "uninlu_queue_wait_seconds",
            "Time a prediction waited before the inference worker took it",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "uninlu_inference_seconds",
            "Worker time per stage: tokenize (text), encode / score (backend calls), "
            "decode (spans and next-level prompts)",
            ("stage",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "uninlu_batch_size",
            "Number of different requests whose steps shared one backend call",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.backend_tokens = Counter(
            "uninlu_backend_tokens",
            "Tokens in the backend calls the batcher formed, by stage (encode|score) and kind: "
            "real (text or prompt tokens) or padded (the padding the backend added: each length "
            "group of a call padded to its longest row, prompts to the longest prompt)",
            ("stage", "kind"),
            registry=r,
        )
        self.request_cost_tokens = Histogram(
            "uninlu_request_cost_tokens",
            "Model tokens a prediction actually sent to the backend (its cost), per prediction",
            buckets=_COST_BUCKETS,
            registry=r,
        )
        self.request_prompt_rows = Histogram(
            "uninlu_request_prompt_rows",
            "Prompt rows a prediction actually scored, per prediction",
            buckets=_ROW_BUCKETS,
            registry=r,
        )
        self.wasted_tokens = Counter(
            "uninlu_wasted_tokens",
            "Model tokens sent to the backend for predictions that then ended without an output "
            "(work thrown away), by cause; its share of uninlu_backend_tokens_total{kind=real} is "
            "the wasted share",
            ("reason",),
            registry=r,
        )
        self.refused_tokens = Counter(
            "uninlu_refused_tokens",
            "Estimated model tokens of predictions refused at admission, before any compute, by "
            "cause (queue_full, predicted_late: 429; deadline_exceeded: 504 at once; "
            "shutting_down: 503)",
            ("reason",),
            registry=r,
        )
        self.round_seconds = Histogram(
            "uninlu_round_seconds",
            "Wall time of one scheduling round (its encode and score calls and the decoding "
            "between them); rounds aim at ROUND_BUDGET_MS",
            buckets=_ROUND_BUCKETS,
            registry=r,
        )
        self.seconds_per_token = Gauge(
            "uninlu_backend_seconds_per_token",
            "The scheduler's measure of backend speed: seconds per model token, by stage (a "
            "token-weighted moving average of its calls, seeded by the warm-up)",
            ("stage",),
            registry=r,
        )
        self.backlog_seconds = Gauge(
            "uninlu_backlog_seconds",
            "Estimated seconds of backend work of the admitted predictions, as of the last "
            "admission",
            registry=r,
        )
        self.rejected = Counter(
            "uninlu_rejected_total",
            "Requests refused before inference, or cancelled during it (deadline_exceeded, "
            "client_disconnected), by cause",
            ("reason",),
            registry=r,
        )
        self.model_load_seconds = Gauge(
            "uninlu_model_load_seconds", "Time it took to load the model at start-up", registry=r
        )
        self.model_ready = Gauge(
            "uninlu_model_ready",
            "1 once the model is loaded and warmed up, 0 otherwise",
            registry=r,
        )
        self.build_info = Gauge(
            "uninlu_build_info",
            "Always 1; the labels say what is running",
            ("version", "model", "backend"),
            registry=r,
        )
        # A pod that has not served a prediction yet must still report a rate (0), or the
        # adapter has no value for it and the HPA stops scaling down (FailedGetPodsMetric).
        for route in PREDICT_ROUTES:
            self.requests_total.labels(route, "POST", "200")
            self.predict_texts.labels(route, "200")
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        for stage in INFERENCE_STAGES:
            self.inference.labels(stage)
        for stage in BACKEND_STAGES:
            for kind in TOKEN_KINDS:
                self.backend_tokens.labels(stage, kind)
        for reason in WASTE_REASONS:
            self.wasted_tokens.labels(reason)
        for reason in REFUSE_REASONS:
            self.refused_tokens.labels(reason)
