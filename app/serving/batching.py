"""Cross-request dynamic batching with fair scheduling: one worker thread owns the backend and
the tokenizer.

Every request is an `Extraction` whose `steps()` generator yields model steps
(app/model/pipeline.py).
The worker drives the generators of all active requests in rounds. A step is executed in pieces:
each round, least attained first (below), every active request contributes at most one
slice (`slice_tokens` model tokens) of its pending step's inputs, until the round holds
`max_batch_tokens` per stage; the pieces of all requests go out as one `backend.encode` and one
`backend.score` call (split so that rows x padded length stays within `max_batch_tokens`,
shortest first to keep padding small). A request's step finishes when its last piece has run;
then its generator moves on. So a short request arriving behind a long one waits about one round
(about a slice of the long one), not the long one's whole step, and cross-request batching stays.
New requests join at the next round; an idle worker waits up to `batch_wait_ms` for company.

The order is least attained service first: when a round's budget runs out, the requests that
have had the fewest model tokens so far got their slices. Why (measured against round robin,
shortest remaining cost and the whole-step scheduler before issue 15, all since removed: short
requests' p95 under heavy load lowest, heavy requests not slowed): bench/README.md, "Heavy
requests".

Cancellation: a request whose waiter went away (client disconnect, deadline) is flagged from the
event loop; before forming each round the worker drops flagged and overdue requests, so at most
the round in progress still runs for them, and their admission slot is freed.

Why a thread and not the event loop: inference holds a core for milliseconds to seconds, and
the loop must keep answering /health, /metrics and 429s meanwhile. Why one thread: the backend
is not re-entrant and a fast tokenizer shared across threads fails ("Already borrowed").

Admission is decided on the event loop, synchronously: at most `max_queue` requests are
admitted (waiting + running); one more is refused at once with `Overloaded`, never queued.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from app.model.padding import token_batches
from app.model.pipeline import EncodeText, Extraction, Usage, step_lengths
from app.serving.metrics import Metrics

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """The admission limit is reached; the client should retry after `retry_after` seconds."""

    def __init__(self, limit: int, retry_after: int = 1):
        super().__init__(f"server is at its limit of {limit} queued requests; retry later")
        self.retry_after = retry_after


class NotAccepting(Exception):
    """The batcher is draining or stopped: no new work is taken."""


class DeadlineExceeded(Exception):
    """The request's deadline passed before it finished; its remaining steps were dropped."""


@dataclass(frozen=True)
class Job:
    """What to predict: the arguments of one `Extraction` (schema already validated), the
    admission estimate (model tokens, logged as cost_estimate) and what it actually cost, which
    the worker fills in when the job ends, whatever the outcome."""

    text: str
    schema: dict
    output_all_prefix: bool = False
    estimated_cost: int | None = None
    usage: Usage = field(default_factory=Usage, compare=False)


_sequence = itertools.count()


@dataclass(eq=False)
class _Task:
    job: Job
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    done: Callable[[], None]
    deadline: float | None = None  # time.monotonic() after which the worker drops it
    enqueued: float = field(default_factory=time.perf_counter)
    seq: int = field(default_factory=lambda: next(_sequence))
    gen: Generator | None = None
    step: Any = None
    pending: collections.deque = field(default_factory=collections.deque)  # step inputs to run
    results: list = field(default_factory=list)
    missing: int = 0  # inputs of the step whose results have not arrived
    cancelled: bool = False  # set from the loop thread when nobody waits for the result


@dataclass
class _Item:
    """One window or prompt row of some task, placed in a backend call."""

    task: _Task
    index: int  # position in that task's step
    payload: Any
    tokens: int  # its padded length contribution


class Batcher:
    """Owns the inference worker; `predict_many` is the only way work gets in."""

    def __init__(
        self,
        backend: Any,
        tokenizer: Any,
        *,
        max_batch_tokens: int,
        batch_wait_ms: float,
        max_batch_requests: int,
        max_queue: int,
        max_prompt_rows: int | None = None,
        max_request_cost: int | None = None,
        slice_tokens: int | None = None,
        metrics: Metrics | None = None,
        extraction_factory: Callable[..., Extraction] | None = None,
    ):
        self.backend = backend
        self.tokenizer = tokenizer
        self.max_batch_tokens = max_batch_tokens
        self.batch_wait = batch_wait_ms / 1000.0
        self.max_batch_requests = max_batch_requests
        self.max_queue = max_queue
        self.slice_tokens = slice_tokens or max_batch_tokens
        self.round_tokens = max_batch_tokens
        self.metrics = metrics
        # The extraction enforces the row and cost budgets itself, before it builds a level's rows.
        self._extraction = extraction_factory or partial(
            Extraction, max_prompt_rows=max_prompt_rows, max_cost=max_request_cost
        )
        self._inbox: collections.deque[_Task] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._accepting = True
        self._admitted = 0  # touched on the event loop thread only
        self._thread = threading.Thread(target=self._run, name="inference-worker", daemon=True)

    # ---------------------------------------------------------------- event-loop side

    @property
    def admitted(self) -> int:
        return self._admitted

    def start(self) -> None:
        self._thread.start()

    def stop_admitting(self) -> None:
        """From now on `predict_many` raises NotAccepting; admitted work still finishes."""
        self._accepting = False

    async def predict(self, job: Job, deadline: float | None = None) -> list:
        return (await self.predict_many([job], deadline))[0]

    async def predict_many(self, jobs: Sequence[Job], deadline: float | None = None) -> list[list]:
        """Admit all jobs or none (Overloaded / NotAccepting raised before any await), then wait
        for their outputs until `deadline` (time.monotonic(); DeadlineExceeded after it). A job's
        model error is raised here; the others' work is dropped. Cancelling the caller drops the
        jobs' remaining steps too."""
        if not self._accepting:
            raise NotAccepting("server is shutting down")
        if self._admitted + len(jobs) > self.max_queue:
            raise Overloaded(self.max_queue)
        loop = asyncio.get_running_loop()
        tasks = [_Task(job, loop, loop.create_future(), self._release, deadline) for job in jobs]
        self._admitted += len(tasks)
        self._gauge()
        with self._cond:
            self._inbox.extend(tasks)
            self._cond.notify()
        waiting = asyncio.gather(*(t.future for t in tasks))
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        try:
            return list(await asyncio.wait_for(waiting, timeout))
        except TimeoutError:
            raise DeadlineExceeded("the request's deadline passed") from None
        finally:  # whatever ended the wait, the worker drops what nobody waits for any more
            for t in tasks:
                t.cancelled = True

    def _release(self) -> None:
        self._admitted -= 1
        self._gauge()

    def _gauge(self) -> None:
        if self.metrics:
            self.metrics.queue_depth.set(self._admitted)

    async def close(self, timeout: float | None = None) -> None:
        """Stop admitting, let the worker finish what it holds, and wait for it to exit."""
        self.stop_admitting()
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, timeout)

    # ---------------------------------------------------------------- worker side

    def _run(self) -> None:
        active: list[_Task] = []
        while True:
            new = self._take(len(active))
            if new is None:
                return
            for task in new:
                self._begin(task)
            active = self._drop_abandoned([t for t in (*active, *new) if t.gen is not None])
            if not active:
                continue
            try:
                self._round(active)
            except Exception as err:  # a bug here must not leave every waiter hanging
                log.exception("inference round failed; failing its %d requests", len(active))
                for t in active:
                    if t.gen is not None:
                        self._fail(t, err)
            active = [t for t in active if t.gen is not None]

    def _drop_abandoned(self, active: list[_Task]) -> list[_Task]:
        """Close the requests nobody waits for, or whose deadline passed, before they reach the
        backend again; their slots are freed."""
        now = time.monotonic()
        for t in active:
            if t.cancelled:
                self._fail(t, None)
            elif t.deadline is not None and now >= t.deadline:
                self._fail(t, DeadlineExceeded("the request's deadline passed"))
        return [t for t in active if t.gen is not None]

    def _take(self, n_active: int) -> list[_Task] | None:
        """New tasks for the next round (None: stop). Blocks while there is nothing to do; an
        idle worker waits up to batch_wait for more requests to fill a fresh batch."""
        room = self.max_batch_requests - n_active
        with self._cond:
            while not self._inbox and not n_active:
                if self._stopping:
                    return None
                self._cond.wait()
            if n_active == 0 and self.batch_wait > 0 and len(self._inbox) < room:
                deadline = time.monotonic() + self.batch_wait
                while len(self._inbox) < room and not self._stopping:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            taken = []
            while self._inbox and len(taken) < room:
                taken.append(self._inbox.popleft())
            return taken

    def _begin(self, task: _Task) -> None:
        """Build the request's generator and run it to its first step (text tokenization)."""
        if self.metrics:
            self.metrics.queue_wait.observe(time.perf_counter() - task.enqueued)
        if task.cancelled:
            self._resolve(task, None, None)
            return
        started = time.perf_counter()
        try:
            job = task.job
            extraction = self._extraction(
                self.tokenizer, job.text, job.schema, job.output_all_prefix
            )
            task.gen = extraction.steps()
            self._advance(task, lambda gen: next(gen))
        except Exception as err:  # the request's own failure, reported to it alone
            task.gen = None
            self._resolve(task, None, err)
        self._observe("tokenize", started)

    def _advance(self, task: _Task, move: Callable[[Generator], Any]) -> None:
        """Move the generator to its next step and queue that step's inputs."""
        try:
            task.step = move(task.gen)
            step = task.step
            lengths = step_lengths(step)
            payloads = step.windows if isinstance(step, EncodeText) else step.rows
            task.pending = collections.deque(
                _Item(task, i, p, n) for i, (p, n) in enumerate(zip(payloads, lengths, strict=True))
            )
            task.results = [None] * len(lengths)
            task.missing = len(lengths)
        except StopIteration as stop:
            task.gen = None
            self._resolve(task, stop.value, None)
        except Exception as err:
            self._fail(task, err)

    @staticmethod
    def _order(active: list[_Task]) -> list[_Task]:
        """Least attained service first: who gets its slice first when a round's budget runs
        out (ties: the earlier request)."""
        return sorted(active, key=lambda t: (t.job.usage.tokens, t.seq))

    def _round(self, active: list[_Task]) -> None:
        """One slice of every active request, as far as the round's budget goes: backend calls
        shared across requests."""
        picked: dict[str, list[_Item]] = {"encode": [], "score": []}
        used = {"encode": 0, "score": 0}
        for t in self._order(active):
            stage = "encode" if isinstance(t.step, EncodeText) else "score"
            taken = 0
            while t.pending:
                n = t.pending[0].tokens
                if not (
                    _fits(self.slice_tokens, taken, n) and _fits(self.round_tokens, used[stage], n)
                ):
                    break
                picked[stage].append(t.pending.popleft())
                taken += n
                used[stage] += n
        failed: dict[_Task, Exception] = {}
        for stage, call in (("encode", self.backend.encode), ("score", self.backend.score)):
            items = picked[stage]
            for part in token_batches([it.tokens for it in items], self.max_batch_tokens):
                self._call(stage, call, [items[i] for i in part], failed)
        started = time.perf_counter()
        for t in active:
            if t in failed:
                self._fail(t, failed[t])
            elif t.gen is not None and t.missing == 0:
                res = t.results
                self._advance(t, lambda gen, res=res: gen.send(res))
        self._observe("decode", started)

    def _call(self, stage: str, call: Callable, chunk: list[_Item], failed: dict) -> None:
        """One backend call; its results go to their tasks, a failure to every task in it."""
        real = sum(it.tokens for it in chunk)
        started = time.perf_counter()
        try:
            outputs = call([it.payload for it in chunk])
            if len(outputs) != len(chunk):
                raise RuntimeError(f"backend {stage} returned {len(outputs)} results")
        except Exception as err:  # a server fault: fails the requests in this call
            log.exception("backend %s failed for %d rows", stage, len(chunk))
            for it in chunk:
                failed.setdefault(it.task, err)
            return
        finally:
            self._observe(stage, started)
        if self.metrics:
            self.metrics.batch_size.observe(len({id(it.task) for it in chunk}))
            self.metrics.backend_tokens.labels(stage, "real").inc(real)
            self.metrics.backend_tokens.labels(stage, "padded").inc(self._padding(stage, chunk))
        for it, out in zip(chunk, outputs, strict=True):
            task = it.task
            task.results[it.index] = out
            task.missing -= 1
            task.job.usage.tokens += it.tokens
            task.job.usage.rows += int(stage == "score")

    def _padding(self, stage: str, chunk: list[_Item]) -> int:
        """Padding tokens of the call just made: what the backend reports of its length groups,
        or, for a backend that pads the whole call to its longest row, that padding."""
        reported = getattr(self.backend, "padding_added", {}).get(stage)
        if reported is not None:
            return reported
        return len(chunk) * max(it.tokens for it in chunk) - sum(it.tokens for it in chunk)

    def _observe(self, stage: str, started: float) -> None:
        if self.metrics:
            self.metrics.inference.labels(stage).observe(time.perf_counter() - started)

    def _fail(self, task: _Task, error: BaseException | None) -> None:
        """End a request early (error None: nobody waits); its remaining inputs never run."""
        if task.gen is not None:
            task.gen.close()
            task.gen = None
        task.pending.clear()
        self._resolve(task, None, error)

    def _resolve(self, task: _Task, value: Any, error: BaseException | None) -> None:
        """Hand the outcome to the event loop (thread-safe) and release the admission slot."""
        if self.metrics:
            self.metrics.request_cost_tokens.observe(task.job.usage.tokens)
            self.metrics.request_prompt_rows.observe(task.job.usage.rows)

        def finish() -> None:
            task.done()
            if task.future.done():
                return
            if task.cancelled:  # nobody waits: do not leave an unretrieved exception behind
                task.future.cancel()
            elif error is not None:
                task.future.set_exception(error)
            else:
                task.future.set_result(value)

        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            task.loop.call_soon_threadsafe(finish)


def _fits(budget: int, used: int, n: int) -> bool:
    """Whether n more tokens fit a budget; the first input always fits (progress)."""
    return not used or used + n <= budget
