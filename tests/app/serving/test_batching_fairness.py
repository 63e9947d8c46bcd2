"""Fair scheduling in the batcher (issue 15), on the real tiny checkpoint: a short request behind
a heavy one finishes first (least attained service first, in slices), sliced results equal the
one-by-one driver, the padding metric counts what the backend padded, and a cancelled or overdue
request reaches the backend no more."""

from __future__ import annotations

import asyncio
import time

import pytest
from batcher_harness import (
    TEXTS,
    RecordingBackend,
    counter,
    gather_each,
    jobs,
    make,
    one_by_one,
)

from app.model.pipeline import parse_schema
from app.serving.batching import Batcher, DeadlineExceeded, Job

# Every call taken to cost 1 ms per model token, rounds of 400 ms: 400 model tokens a round.
ROUNDS_OF_400 = {"seconds_per_token": 1e-3, "round_budget_ms": 400}
HEAVY = Job(TEXTS[-1] * 2, parse_schema({f"类型{i}": None for i in range(10)}))
SHORT = Job(TEXTS[0], parse_schema({"人物": None}))


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


def test_a_short_request_behind_a_heavy_one_finishes_first(model):
    batcher, recorder, metrics = make(model, **ROUNDS_OF_400, max_batch_tokens=4096, gate_at=0)
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


def test_sliced_results_equal_one_by_one(model):
    work = [*jobs()[:6], HEAVY]
    batcher, recorder, _ = make(
        model, seconds_per_token=1e-3, round_budget_ms=300, max_batch_tokens=2048
    )
    assert asyncio.run(gather_each(batcher, work)) == [one_by_one(model, j) for j in work]
    assert all(tokens <= 2048 or rows == 1 for _, rows, tokens in recorder.calls)


def test_a_cancelled_heavy_request_reaches_the_backend_no_more(model):
    """Cancelled while the worker is inside one of its calls: that call finishes, no other call
    is made for it, its slot is freed, and the next request is served at once."""
    batcher, recorder, _ = make(model, **ROUNDS_OF_400, gate_at=2)

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
    batcher, recorder, _ = make(model, **ROUNDS_OF_400, gate_at=0)

    async def scenario():
        started = asyncio.ensure_future(batcher.predict(HEAVY, deadline=time.monotonic() + 0.05))
        with pytest.raises(DeadlineExceeded):
            await started
        recorder.release.set()
        return await batcher.predict(SHORT)

    assert asyncio.run(scenario()) == one_by_one(model, SHORT)
    assert len(recorder.calls) - 2 <= 1  # short: encode + score; heavy: its gated encode at most
    assert batcher.admitted == 0
