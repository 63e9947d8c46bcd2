"""The dynamic batcher on the real tiny checkpoint, with the backend wrapped to record its calls:
results equal the one-by-one driver, calls really mix requests and respect MAX_BATCH_TOKENS,
admission is bounded, and one request's failure stays its own."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from app.model.errors import InputError, TooComplex
from app.model.pipeline import EncodeText, Extraction, parse_schema, run_steps
from app.runtime.torch_backend import load_backend
from app.serving.batching import Batcher, DeadlineExceeded, Job, NotAccepting, Overloaded
from app.serving.metrics import Metrics

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
    """The real backend; remembers each call's kind, row count and padded token count."""

    def __init__(self, inner, fail_on: str | None = None, gate_at: int | None = None):
        self.inner = inner
        self.name = inner.name
        self.calls: list[tuple[str, int, int]] = []
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
        self._gate()
        if self.fail_on == "encode":
            self.fail_on = None
            raise RuntimeError("simulated device failure")
        return self.inner.encode(windows)

    def score(self, rows):
        width = max(r.position_offset + len(r.prompt_ids) for r in rows)
        self.calls.append(("score", len(rows), len(rows) * width))
        self._gate()
        return self.inner.score(rows)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_backend(tiny_model_dir, device="cpu", threads=1)


def make(model, **kw) -> tuple[Batcher, RecordingBackend, Metrics]:
    backend, tokenizer = model
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


async def gather_each(batcher: Batcher, work: list[Job]) -> list:
    return await asyncio.gather(*(batcher.predict(j) for j in work))


def test_concurrent_results_equal_one_by_one_and_calls_mix_requests(model):
    work = jobs()
    batcher, recorder, metrics = make(model, max_batch_tokens=4096)
    got = asyncio.run(gather_each(batcher, work))
    assert got == [one_by_one(model, j) for j in work]
    assert any(bool(out) for out in got)
    single, calls = histogram(metrics, "uninlu_batch_size", "1.0")
    assert calls == len(recorder.calls) and single < calls  # some calls held several requests
    assert all(tokens <= 4096 or rows == 1 for _, rows, tokens in recorder.calls), recorder.calls
    assert batcher.admitted == 0


def test_small_token_budget_splits_calls_without_changing_results(model):
    work = jobs()[:6]
    batcher, recorder, _ = make(model, max_batch_tokens=600)
    got = asyncio.run(gather_each(batcher, work))
    assert got == [one_by_one(model, j) for j in work]
    assert all(tokens <= 600 or rows == 1 for _, rows, tokens in recorder.calls)
    assert any(rows > 1 for _, rows, _ in recorder.calls)


def test_one_request_at_a_time_when_batching_is_off(model):
    work = jobs()[:6]
    batcher, _, metrics = make(model, max_batch_requests=1)
    got = asyncio.run(gather_each(batcher, work))
    assert got == [one_by_one(model, j) for j in work]
    single, calls = histogram(metrics, "uninlu_batch_size", "1.0")
    assert calls > 0 and single == calls


def test_admission_is_bounded_and_refused_at_once(model):
    batcher, _, _ = make(model, max_queue=3)
    job = jobs()[0]

    async def scenario():
        first = asyncio.ensure_future(batcher.predict_many([job, job]))
        await asyncio.sleep(0)  # admitted synchronously inside predict_many
        assert batcher.admitted == 2
        with pytest.raises(Overloaded):
            await batcher.predict_many([job, job])  # 2 + 2 > 3: all or nothing
        third = await batcher.predict(job)  # 2 + 1 fits
        return await first, third

    (a, b), c = asyncio.run(scenario())
    assert a == b == c == one_by_one(model, job)
    assert batcher.admitted == 0


def test_a_failing_request_fails_alone(model):
    batcher, _, _ = make(model)
    good = jobs()[0]
    bad = Job(12345, parse_schema({"人物": None}))  # not a string: the pipeline refuses it

    async def scenario():
        return await asyncio.gather(
            batcher.predict(good), batcher.predict(bad), return_exceptions=True
        )

    ok, err = asyncio.run(scenario())
    assert ok == one_by_one(model, good)
    assert isinstance(err, InputError)


def test_a_backend_failure_fails_that_call_and_the_worker_goes_on(model):
    batcher, _, _ = make(model, fail_on="encode")
    job = jobs()[0]

    async def scenario():
        with pytest.raises(RuntimeError, match="simulated"):
            await batcher.predict(job)
        return await batcher.predict(job)

    assert asyncio.run(scenario()) == one_by_one(model, job)
    assert batcher.admitted == 0


def test_close_finishes_admitted_work_then_refuses(model):
    batcher, _, _ = make(model)
    work = jobs()[:4]

    async def scenario():
        running = asyncio.ensure_future(batcher.predict_many(work))
        await asyncio.sleep(0)
        assert batcher.admitted == len(work)
        await batcher.close(timeout=60)
        with pytest.raises(NotAccepting):
            await batcher.predict(work[0])
        return await running

    assert asyncio.run(scenario()) == [one_by_one(model, j) for j in work]


def test_a_cancelled_waiter_releases_its_slot(model):
    batcher, _, _ = make(model, max_queue=2, max_batch_requests=1)
    job = Job(TEXTS[-1], parse_schema(SCHEMAS[0]))

    async def scenario():
        tasks = [asyncio.ensure_future(batcher.predict(job)) for _ in range(2)]
        await asyncio.sleep(0)
        tasks[1].cancel()
        result = await tasks[0]
        for _ in range(200):  # the worker drops the cancelled one and frees the slot
            if batcher.admitted == 0:
                break
            await asyncio.sleep(0.01)
        return result, batcher.admitted

    result, admitted = asyncio.run(scenario())
    assert result == one_by_one(model, job) and admitted == 0


def test_a_request_over_the_prompt_row_budget_is_stopped_alone(model):
    batcher, _, _ = make(model, max_prompt_rows=40)
    explosive = Job(TEXTS[0] * 6, parse_schema({"甲": {"乙": {"丙": None}}}))
    small = jobs()[0]

    async def scenario():
        return await asyncio.gather(
            batcher.predict(explosive), batcher.predict(small), return_exceptions=True
        )

    err, ok = asyncio.run(scenario())
    assert isinstance(err, TooComplex) and "40 prompt rows" in str(err)
    assert ok == one_by_one(model, small)
    assert batcher.admitted == 0


def test_a_broken_step_fails_its_round_and_the_worker_survives(model):
    backend, tokenizer = model

    class Broken:
        def __init__(self, tokenizer, text, schema, output_all_prefix=False):
            self.real = Extraction(tokenizer, text, schema, output_all_prefix)
            self.text = text

        def steps(self):
            if self.text == "broken":
                yield EncodeText(None)  # not a list: the round itself fails
            return (yield from self.real.steps())

    batcher = Batcher(
        backend,
        tokenizer,
        max_batch_tokens=8192,
        batch_wait_ms=0,
        max_batch_requests=8,
        max_queue=8,
        extraction_factory=Broken,
    )
    batcher.start()
    good = jobs()[0]

    async def scenario():
        with pytest.raises(TypeError):
            await batcher.predict(Job("broken", parse_schema({"人物": None})))
        return await batcher.predict(good)

    assert asyncio.run(scenario()) == one_by_one(model, good)


# ---------------------------------------------------------------------------------------------
# fair scheduling, cancellation, deadlines (issue 15)

HEAVY = Job(TEXTS[-1] * 2, parse_schema({f"类型{i}": None for i in range(10)}))
SHORT = Job(TEXTS[0], parse_schema({"人物": None}))


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    raise KeyError(name)


async def short_behind_heavy(batcher: Batcher, recorder: RecordingBackend) -> list[str]:
    """Send the heavy job, wait until the worker is inside its first backend call, then send the
    short one; the order in which they finish."""
    finished: list[str] = []

    async def run(name: str, job: Job) -> list:
        out = await batcher.predict(job)
        finished.append(name)
        return out

    heavy = asyncio.ensure_future(run("heavy", HEAVY))
    await asyncio.to_thread(recorder.entered.wait, 60)
    short = asyncio.ensure_future(run("short", SHORT))
    await asyncio.sleep(0)  # admitted before the worker leaves the call
    recorder.release.set()
    await asyncio.gather(heavy, short)
    return finished


@pytest.mark.parametrize("scheduler", ["round_robin", "least_attained", "shortest_remaining"])
def test_a_short_request_behind_a_heavy_one_finishes_first(model, scheduler):
    batcher, recorder, metrics = make(
        model, slice_tokens=400, max_batch_tokens=4096, gate_at=0, scheduler=scheduler
    )
    assert asyncio.run(short_behind_heavy(batcher, recorder)) == ["short", "heavy"]
    assert all(tokens <= 4096 or rows == 1 for _, rows, tokens in recorder.calls)
    real = sum(
        counter(metrics, "uninlu_backend_tokens_total", stage=s, kind="real")
        for s in ("encode", "score")
    )
    padded = sum(
        counter(metrics, "uninlu_backend_tokens_total", stage=s, kind="padded")
        for s in ("encode", "score")
    )
    assert real + padded == sum(tokens for _, _, tokens in recorder.calls) and real > padded


class PaddingReporting(RecordingBackend):
    """Passes on the real backend's report of the padding its length groups added, per call."""

    def __init__(self, inner):
        super().__init__(inner)
        self.reported: list[int] = []

    @property
    def padding_added(self) -> dict[str, int]:
        return self.inner.padding_added

    def encode(self, windows):
        out = super().encode(windows)
        self.reported.append(self.inner.padding_added["encode"])
        return out

    def score(self, rows):
        out = super().score(rows)
        self.reported.append(self.inner.padding_added["score"])
        return out


def test_padding_metric_counts_what_the_backend_padded_not_the_whole_call(model):
    """A call mixing a several-window text with short ones: the backend pads each length group
    to its own longest row, far less than padding every row to the call's longest."""
    batcher, recorder, metrics = make(model, recorder=PaddingReporting(model[0]))
    asyncio.run(gather_each(batcher, jobs()))
    tokens = {
        kind: sum(
            counter(metrics, "uninlu_backend_tokens_total", stage=s, kind=kind)
            for s in ("encode", "score")
        )
        for kind in ("real", "padded")
    }
    whole_call_padding = sum(t for _, _, t in recorder.calls) - tokens["real"]
    assert len(recorder.reported) == len(recorder.calls)
    assert tokens["padded"] == sum(recorder.reported)
    assert 0 < tokens["padded"] < whole_call_padding / 2


def test_the_legacy_scheduler_makes_the_short_request_wait_for_the_heavy_step(model):
    """What issue 15 reported: without slices the heavy request's whole level runs first."""
    batcher, recorder, _ = make(model, slice_tokens=400, gate_at=0, scheduler="legacy")
    assert asyncio.run(short_behind_heavy(batcher, recorder)) == ["heavy", "short"]


def test_sliced_results_equal_one_by_one(model):
    work = [*jobs()[:6], HEAVY]
    batcher, recorder, _ = make(model, slice_tokens=300, max_batch_tokens=2048)
    assert asyncio.run(gather_each(batcher, work)) == [one_by_one(model, j) for j in work]
    assert all(tokens <= 2048 or rows == 1 for _, rows, tokens in recorder.calls)


def test_a_cancelled_heavy_request_reaches_the_backend_no_more(model):
    """Cancelled while the worker is inside one of its calls: that call finishes, no other call
    is made for it, its slot is freed, and the next request is served at once."""
    batcher, recorder, _ = make(model, slice_tokens=400, gate_at=2)

    async def scenario():
        heavy = asyncio.ensure_future(batcher.predict(HEAVY))
        await asyncio.to_thread(recorder.entered.wait, 60)
        heavy.cancel()
        # The cancellation reaches predict's `finally` some loop iterations later (gather, then
        # the task): wait for it before the worker may leave its call, or the race decides.
        with pytest.raises(asyncio.CancelledError):
            await heavy
        calls_at_cancel = len(recorder.calls)
        recorder.release.set()
        short = await batcher.predict(SHORT)
        return calls_at_cancel, short

    calls_at_cancel, short = asyncio.run(scenario())
    assert calls_at_cancel == 3  # the heavy one alone would need 1 + 30 (rows, one per call)
    assert short == one_by_one(model, SHORT)
    assert [kind for kind, _, _ in recorder.calls[calls_at_cancel:]] == ["encode", "score"]
    assert batcher.admitted == 0


def test_a_passed_deadline_drops_the_remaining_steps(model):
    """The deadline passes while the worker is held inside the heavy request's first call (or
    before it got there): at most that call runs for it, and the slot is freed."""
    batcher, recorder, _ = make(model, slice_tokens=400, gate_at=0)

    async def scenario():
        started = asyncio.ensure_future(batcher.predict(HEAVY, deadline=time.monotonic() + 0.05))
        with pytest.raises(DeadlineExceeded):
            await started
        recorder.release.set()
        return await batcher.predict(SHORT)

    assert asyncio.run(scenario()) == one_by_one(model, SHORT)
    assert len(recorder.calls) - 2 <= 1  # short: encode + score; heavy: its gated encode at most
    assert batcher.admitted == 0
