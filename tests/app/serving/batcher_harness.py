"""What the batcher tests share: the real tiny backend wrapped to record its calls, a started
Batcher around it, a mixed set of jobs and the one-by-one driver their results must equal."""

from __future__ import annotations

import asyncio
import threading

from app.model.pipeline import Extraction, parse_schema, row_tokens, run_steps
from app.serving.batching import Batcher, Job
from app.serving.metrics import Metrics
from app.serving.speed import BackendSpeed

TEXTS = [
    "今天上午，小林在杭州西湖边买了两杯龙井茶。",
    "2019年，张海峰从复旦大学毕业后加入了位于深圳的一家芯片公司。",
    "屏幕很清晰，电池不太耐用，客服态度不错",
    "正向,负向|这家小店的面分量很足，汤头也地道，下次还会再来。",
    "青石镇位于浙江省西南部的山区，距县城约四十公里。" * 20,  # several windows
]
SCHEMAS = [
    {"人物": None, "地理位置": None, "组织机构": None},
    {"属性词": {"情感词": None}},
    {"情感分类": None},
]


class RecordingBackend:
    """The real backend; remembers each call's kind, row count and padded token count, and in
    `real` its model tokens (what the scheduler counts)."""

    def __init__(self, inner, fail_on: str | None = None, gate_at: int | None = None):
        self.inner = inner
        self.name = inner.name
        self.calls: list[tuple[str, int, int]] = []
        self.real: list[int] = []
        self.fail_on = fail_on
        # gate_at=k: call k (0-based) signals `entered` and waits for `release` (a test hook to
        # act while the worker is inside a backend call, without timing).
        self.gate_at = gate_at
        self.entered = threading.Event()
        self.release = threading.Event()

    def _gate(self):
        if self.gate_at is not None and len(self.calls) - 1 == self.gate_at:
            self.entered.set()
            self.release.wait(60)

    def encode(self, windows):
        self.calls.append(("encode", len(windows), len(windows) * max(map(len, windows))))
        self.real.append(sum(map(len, windows)))
        self._gate()
        if self.fail_on == "encode":
            self.fail_on = None
            raise RuntimeError("simulated device failure")
        return self.inner.encode(windows)

    def score(self, rows):
        width = max(r.position_offset + len(r.prompt_ids) for r in rows)
        self.calls.append(("score", len(rows), len(rows) * width))
        self.real.append(sum(map(row_tokens, rows)))
        self._gate()
        return self.inner.score(rows)


def make(model, **kw) -> tuple[Batcher, RecordingBackend, Metrics]:
    """A started Batcher around the recording backend. `seconds_per_token=x`: the scheduler
    takes every call to cost x seconds per model token (BackendSpeed.recorded), so rounds and
    admission are decided deterministically; unset: measured."""
    backend, tokenizer = model
    per_token = kw.pop("seconds_per_token", None)
    if per_token is not None:
        kw["speed"] = BackendSpeed(recorded={"encode": per_token, "score": per_token})
    recorder = kw.pop("recorder", None) or RecordingBackend(
        backend, kw.pop("fail_on", None), kw.pop("gate_at", None)
    )
    metrics = Metrics()
    options = {
        "max_batch_tokens": 8192,
        "batch_wait_ms": 20,
        "max_batch_requests": 64,
        "max_queue": 64,
    }
    options.update(kw)
    batcher = Batcher(recorder, tokenizer, metrics=metrics, **options)
    batcher.start()
    return batcher, recorder, metrics


def jobs() -> list[Job]:
    out = []
    for i, text in enumerate(TEXTS * 3):
        schema = parse_schema(SCHEMAS[i % len(SCHEMAS)])
        out.append(Job(text, schema, output_all_prefix=i % 2 == 1))
    return out


def one_by_one(model, job: Job) -> list:
    backend, tokenizer = model
    return run_steps(backend, Extraction(tokenizer, job.text, job.schema, job.output_all_prefix))


def histogram(metrics: Metrics, name: str, le: str) -> tuple[float, float]:
    values = {
        (s.name, s.labels.get("le")): s.value
        for family in metrics.registry.collect()
        for s in family.samples
    }
    return values[(name + "_bucket", le)], values[(name + "_count", None)]


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    raise KeyError(name)


async def gather_each(batcher: Batcher, work: list[Job]) -> list:
    return await asyncio.gather(*(batcher.predict(j) for j in work))
