"""Cross-request dynamic batching: one worker thread owns the backend and the tokenizer.

Every request is an `Extraction` whose `steps()` generator yields model steps (app/pipeline.py).
The worker drives the generators of all active requests in rounds: each round it takes the
pending step of every request, runs the text windows of all `EncodeText` steps through one
`backend.encode` call and the rows of all `ScorePrompts` steps through one `backend.score` call
(split so that rows x padded length stays within `max_batch_tokens`), and sends each request
its share of the results. New requests join at the next round; an idle worker waits up to
`batch_wait_ms` for company before starting a fresh batch.

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
import logging
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from app.metrics import Metrics
from app.pipeline import EncodeText, Extraction, ScorePrompts

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """The admission limit is reached; the client should retry after `retry_after` seconds."""

    def __init__(self, limit: int, retry_after: int = 1):
        super().__init__(f"server is at its limit of {limit} queued requests; retry later")
        self.retry_after = retry_after


class NotAccepting(Exception):
    """The batcher is draining or stopped: no new work is taken."""


@dataclass(frozen=True)
class Job:
    """What to predict: the arguments of one `Extraction` (schema already validated)."""

    text: str
    schema: dict
    output_all_prefix: bool = False


@dataclass(eq=False)
class _Task:
    job: Job
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    done: Callable[[], None]
    enqueued: float = field(default_factory=time.perf_counter)
    gen: Generator | None = None
    step: Any = None
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
        metrics: Metrics | None = None,
        extraction_factory: Callable[..., Extraction] | None = None,
    ):
        self.backend = backend
        self.tokenizer = tokenizer
        self.max_batch_tokens = max_batch_tokens
        self.batch_wait = batch_wait_ms / 1000.0
        self.max_batch_requests = max_batch_requests
        self.max_queue = max_queue
        self.metrics = metrics
        # The extraction enforces max_prompt_rows itself, before it builds a level's rows.
        self._extraction = extraction_factory or partial(
            Extraction, max_prompt_rows=max_prompt_rows
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

    async def predict(self, job: Job) -> list:
        return (await self.predict_many([job]))[0]

    async def predict_many(self, jobs: Sequence[Job]) -> list[list]:
        """Admit all jobs or none (Overloaded / NotAccepting raised before any await), then wait
        for their outputs. A job's model error is raised here; the others' work is wasted."""
        if not self._accepting:
            raise NotAccepting("server is shutting down")
        if self._admitted + len(jobs) > self.max_queue:
            raise Overloaded(self.max_queue)
        loop = asyncio.get_running_loop()
        tasks = [_Task(job, loop, loop.create_future(), self._release) for job in jobs]
        self._admitted += len(tasks)
        self._gauge()
        with self._cond:
            self._inbox.extend(tasks)
            self._cond.notify()
        try:
            return list(await asyncio.gather(*(t.future for t in tasks)))
        except BaseException:
            for t in tasks:  # the worker drops what nobody waits for any more
                t.cancelled = True
            raise

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
            active = [t for t in (*active, *new) if t.gen is not None]
            for t in active:
                if t.cancelled:
                    t.gen.close()
                    t.gen = None
                    self._resolve(t, None, None)
            active = [t for t in active if t.gen is not None]
            if not active:
                continue
            try:
                self._round(active)
            except Exception as err:  # a bug here must not leave every waiter hanging
                log.exception("inference round failed; failing its %d requests", len(active))
                for t in active:
                    if t.gen is not None:
                        t.gen.close()
                        t.gen = None
                        self._resolve(t, None, err)
            active = [t for t in active if t.gen is not None]

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
        try:
            task.step = move(task.gen)
        except StopIteration as stop:
            task.gen = None
            self._resolve(task, stop.value, None)
        except Exception as err:
            task.gen = None
            self._resolve(task, None, err)

    def _round(self, active: list[_Task]) -> None:
        """One step of every active request: backend calls shared across requests."""
        encode_items: list[_Item] = []
        score_items: list[_Item] = []
        for t in active:
            if isinstance(t.step, EncodeText):
                encode_items += [_Item(t, i, w, len(w)) for i, w in enumerate(t.step.windows)]
            elif isinstance(t.step, ScorePrompts):
                score_items += [
                    _Item(t, i, r, r.position_offset + len(r.prompt_ids))
                    for i, r in enumerate(t.step.rows)
                ]
            else:
                t.gen.close()
                t.gen = None
                self._resolve(t, None, TypeError(f"unknown pipeline step {t.step!r}"))
        results: dict[_Task, list] = {
            t: [None] * _width(t.step) for t in active if t.gen is not None
        }
        failed: dict[_Task, Exception] = {}
        for items, call, stage in (
            (encode_items, self.backend.encode, "encode"),
            (score_items, self.backend.score, "score"),
        ):
            for chunk in self._chunks(items):
                started = time.perf_counter()
                try:
                    outputs = call([it.payload for it in chunk])
                    if len(outputs) != len(chunk):
                        raise RuntimeError(f"backend {stage} returned {len(outputs)} results")
                except Exception as err:  # a server fault: fails the requests in this call
                    log.exception("backend %s failed for %d rows", stage, len(chunk))
                    for it in chunk:
                        failed.setdefault(it.task, err)
                    continue
                finally:
                    self._observe(stage, started)
                if self.metrics:
                    self.metrics.batch_size.observe(len({id(it.task) for it in chunk}))
                for it, out in zip(chunk, outputs, strict=True):
                    results[it.task][it.index] = out
        started = time.perf_counter()
        for t, res in results.items():
            if t in failed:
                t.gen.close()
                t.gen = None
                self._resolve(t, None, failed[t])
            else:
                self._advance(t, lambda gen, res=res: gen.send(res))
        self._observe("decode", started)

    def _chunks(self, items: list[_Item]) -> list[list[_Item]]:
        """Split into backend calls of at most max_batch_tokens (rows x longest row); sorting by
        length first keeps padding small. A single row longer than the budget goes alone."""
        chunks: list[list[_Item]] = []
        current: list[_Item] = []
        longest = 0
        for it in sorted(items, key=lambda it: it.tokens):
            width = max(longest, it.tokens)
            if current and width * (len(current) + 1) > self.max_batch_tokens:
                chunks.append(current)
                current, width = [], it.tokens
            current.append(it)
            longest = width
        if current:
            chunks.append(current)
        return chunks

    def _observe(self, stage: str, started: float) -> None:
        if self.metrics:
            self.metrics.inference.labels(stage).observe(time.perf_counter() - started)

    def _resolve(self, task: _Task, value: Any, error: BaseException | None) -> None:
        """Hand the outcome to the event loop (thread-safe) and release the admission slot."""

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


def _width(step: Any) -> int:
    return len(step.windows) if isinstance(step, EncodeText) else len(step.rows)
