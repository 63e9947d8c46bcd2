"""Rounds bounded in time, completion-predicting admission, deadline-driven urgency and the drain,
in the batcher on the real tiny checkpoint. The scheduler is given its speed (BackendSpeed's
`recorded` hook), so every decision is deterministic; calls, orders and outcomes are asserted,
never timings."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
from batcher_harness import TEXTS, counter, make, one_by_one

from app.model.pipeline import parse_schema
from app.serving.batching import (
    AGE_SHARE,
    URGENT_ROUNDS,
    DeadlineExceeded,
    Job,
    Overloaded,
    ShuttingDown,
    _Task,
)
from app.serving.cost import estimate_cost
from app.serving.speed import BackendSpeed


def estimated(model, text: str, schema: dict) -> Job:
    """A job with its admission estimate, as the server makes it."""
    parsed = parse_schema(schema)
    e = estimate_cost(model[1], text, parsed)
    return Job(text, parsed, estimated_cost=e.cost, estimated_encode=e.encode)


def heavy(model) -> Job:
    return estimated(model, TEXTS[-1] * 2, {f"类型{i}": None for i in range(10)})


def short(model) -> Job:
    return estimated(model, TEXTS[0], {"人物": None})


# ------------------------------------------------------------------------- the speed measure


def test_the_speed_is_a_token_weighted_moving_average_per_stage():
    speed = BackendSpeed(decay=0.5)
    assert speed.per_token("encode") is None and not speed.known
    speed.record("score", 100, 1.0)  # 10 ms per token
    assert speed.per_token("encode") == speed.per_token("score") == 0.01  # encode: score's so far
    speed.record("score", 900, 0.9)  # 1 ms per token, nine times the tokens
    assert speed.per_token("score") == pytest.approx((0.5 + 0.9) / (50 + 900))
    speed.record("encode", 10, 0.002)
    assert speed.per_token("encode") == pytest.approx(0.0002)
    speed.forget()
    assert speed.per_token("score") is None
    fixed = BackendSpeed(recorded={"encode": 0.001, "score": 0.003})
    fixed.record("score", 10, 99.0)  # the hook records its own figure, not the time taken
    assert fixed.per_token("score") == 0.003 and fixed.known


# ------------------------------------------------------------------------- round sizes


@pytest.mark.parametrize("per_token", [0.5e-3, 1e-3, 2e-3])
def test_round_sizes_follow_the_measured_cost(model, per_token):
    """Rounds of 800 ms: 1,600, 800 or 400 model tokens by the backend's cost per token; each
    round of a request alone is one call per stage, filled up to that (one input always goes)."""
    budget_ms = 800
    batcher, recorder, _ = make(model, seconds_per_token=per_token, round_budget_ms=budget_ms)
    job = heavy(model)
    assert asyncio.run(batcher.predict(job)) == one_by_one(model, job)
    capacity = budget_ms / 1000 / per_token
    for (kind, n, _), real in zip(recorder.calls, recorder.real, strict=True):
        assert real <= capacity or n == 1, (kind, n, real, capacity)
    score = [real for (kind, _, _), real in zip(recorder.calls, recorder.real, strict=True)
             if kind == "score"]  # fmt: skip
    longest_row = 384 + 16
    # Filled, but the first (which shares its round with the text's last windows) and the last.
    assert all(real > capacity - longest_row for real in score[1:-1])
    assert len(recorder.calls) >= sum(recorder.real) / capacity


def test_a_short_request_is_answered_in_the_round_after_the_one_in_progress(model):
    """The short one arrives while a heavy request's score call runs; the next round encodes its
    text and scores its first level (the encode phase, then the score phase), so its two calls
    are the next two, shared with the heavy one's next rows."""
    batcher, recorder, _ = make(model, seconds_per_token=1e-3, round_budget_ms=800)
    big, small = heavy(model), short(model)
    recorder.gate_at = 3  # encode, encode, score, score (gated): the heavy one is scoring

    async def scenario():
        first = asyncio.ensure_future(batcher.predict(big))
        await asyncio.to_thread(recorder.entered.wait, 60)
        second = asyncio.ensure_future(batcher.predict(small))
        await asyncio.sleep(0)  # admitted before the worker leaves the call
        recorder.release.set()
        return await asyncio.gather(first, second)

    got = asyncio.run(scenario())
    assert got == [one_by_one(model, big), one_by_one(model, small)]
    kinds = [kind for kind, _, _ in recorder.calls]
    assert kinds[:6] == ["encode", "encode", "score", "score", "encode", "score"]
    short_tokens = small.estimated_encode
    assert recorder.calls[4][1] == 1 and recorder.real[4] == short_tokens  # its text alone
    assert recorder.calls[5][1] > 1  # its row, with the heavy one's next rows


# ------------------------------------------------------------------------- order


def test_a_request_near_its_deadline_goes_first_and_the_rest_by_least_attained(model):
    """Estimated work 0.4 s (x1.25) against 1.0 s left is urgent when the guard of two rounds
    is 0.6 s; the same work with a minute left is not. Urgent ones go by deadline, the others by
    the least work so far."""
    batcher, _, _ = make(model, seconds_per_token=1e-3, round_budget_ms=300)
    assert URGENT_ROUNDS == 2
    loop = asyncio.new_event_loop()
    try:
        now = time.monotonic()

        def task(cost: int, ran: int, deadline: float) -> _Task:
            job = Job("x", {}, estimated_cost=cost, estimated_encode=0)
            t = _Task(job, loop, loop.create_future(), now + deadline)
            t.ran["score"] = ran
            return t

        near = task(cost=900, ran=500, deadline=1.0)  # 0.4 s left to do
        relaxed = task(cost=900, ran=500, deadline=60)
        fresh = task(cost=100, ran=0, deadline=60)
        later_urgent = task(cost=300, ran=0, deadline=0.9)  # earlier deadline: first
        urgent, rest = batcher._order([relaxed, fresh, near, later_urgent])
        assert (urgent, rest) == ([later_urgent, near], [fresh, relaxed])
        assert batcher._order([relaxed, fresh]) == ([], [fresh, relaxed])
        # Ageing: whatever its estimate, a request that has used AGE_SHARE of its time is urgent.
        aged = task(cost=900, ran=500, deadline=60)
        aged.admitted = now - 60 * AGE_SHARE / (1 - AGE_SHARE) - 1
        assert batcher._order([relaxed, fresh, aged]) == ([aged], [fresh, relaxed])
    finally:
        loop.close()


# ------------------------------------------------------------------------- admission


def test_a_request_that_cannot_fit_its_deadline_is_refused_before_any_compute(model):
    batcher, recorder, _ = make(model, seconds_per_token=1e-3, round_budget_ms=100)
    big = heavy(model)  # about 12,000 model tokens: 12 s at 1 ms per token

    async def scenario():
        with pytest.raises(DeadlineExceeded) as refused:
            await batcher.predict(big, deadline=time.monotonic() + 5)
        return refused.value

    refused = asyncio.run(scenario())
    assert refused.early and refused.left_s == pytest.approx(big.estimated_cost * 1e-3)
    assert recorder.calls == [] and batcher.admitted == 0


def test_a_backlog_that_would_make_a_deadline_pass_refuses_the_newcomer(model):
    """While a heavy request (about 12.7 s of work) with 30 s to go runs, a second one with the
    same limit would not make it behind it: 429 predicted_late, Retry-After the excess; a short
    one fits."""
    batcher, recorder, _ = make(model, seconds_per_token=1e-3, round_budget_ms=1000, gate_at=0)
    big, small = heavy(model), short(model)

    async def scenario():
        first = asyncio.ensure_future(batcher.predict(big, deadline=time.monotonic() + 30))
        await asyncio.to_thread(recorder.entered.wait, 60)
        with pytest.raises(Overloaded) as late:
            await batcher.predict(heavy(model), deadline=time.monotonic() + 30)
        fits = asyncio.ensure_future(batcher.predict(small, deadline=time.monotonic() + 30))
        await asyncio.sleep(0)
        recorder.release.set()
        return late.value, await fits, await first

    late, got_small, got_big = asyncio.run(scenario())
    assert late.reason == "predicted_late"
    needed = 2 * big.estimated_cost * 1e-3 * 1.25 + 1.0  # both, stretched, and the round
    assert late.retry_after == math.ceil(needed - 30)
    assert got_small == one_by_one(model, small) and got_big == one_by_one(model, big)


# ------------------------------------------------------------------------- drain


def test_the_drain_answers_what_cannot_finish_at_once_and_lets_the_rest_finish(model):
    batcher, recorder, metrics = make(model, seconds_per_token=1e-3, round_budget_ms=100, gate_at=0)
    big, small = heavy(model), short(model)

    async def scenario():
        first = asyncio.ensure_future(batcher.predict(big, deadline=time.monotonic() + 600))
        await asyncio.to_thread(recorder.entered.wait, 60)
        second = asyncio.ensure_future(batcher.predict(small, deadline=time.monotonic() + 600))
        await asyncio.sleep(0)
        batcher.drain(time.monotonic() + 5)  # 12 s of work cannot make it, 0.06 s can
        with pytest.raises(ShuttingDown):
            await first
        recorder.release.set()
        return await second

    assert asyncio.run(scenario()) == one_by_one(model, small)
    # The heavy one's first call (in progress at the drain) is all it cost, thrown away.
    wasted = counter(metrics, "uninlu_wasted_tokens_total", reason="shutting_down")
    assert wasted == recorder.real[0]
    assert [kind for kind, _, _ in recorder.calls[1:]] == ["encode", "score"]


def test_the_drain_answers_whatever_is_left_at_its_instant(model):
    """A request the estimate keeps, but whose call hangs: answered at the drain's instant, not
    left to the HTTP server's cancel."""
    batcher, recorder, _ = make(model, seconds_per_token=1e-3, round_budget_ms=100, gate_at=0)
    small = short(model)

    async def scenario():
        running = asyncio.ensure_future(batcher.predict(small, deadline=time.monotonic() + 600))
        await asyncio.to_thread(recorder.entered.wait, 60)
        batcher.drain(time.monotonic() + 0.2)
        try:
            with pytest.raises(ShuttingDown):
                await running
        finally:
            recorder.release.set()

    asyncio.run(scenario())
