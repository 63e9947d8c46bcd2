"""The dynamic batcher on the real tiny checkpoint, with the backend wrapped to record its calls:
results equal the one-by-one driver, calls really mix requests and respect MAX_BATCH_TOKENS,
admission is bounded, and one request's failure stays its own. Fair scheduling, cancellation and
deadlines: test_batching_fairness.py."""

from __future__ import annotations

import asyncio

import pytest
from batcher_harness import SCHEMAS, TEXTS, gather_each, histogram, jobs, make, one_by_one

from app.model.errors import InputError, TooComplex
from app.model.pipeline import EncodeText, Extraction, parse_schema
from app.serving.batching import Batcher, Job, NotAccepting, Overloaded


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
