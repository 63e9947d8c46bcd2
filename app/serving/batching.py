"""Cross-request dynamic batching with fair scheduling, in rounds bounded in time: one worker
thread owns the backend and the tokenizer.

Every request is an `Extraction` whose `steps()` generator yields model steps
(app/model/pipeline.py). The worker drives the generators of all active requests in rounds; a
step is executed in pieces (text windows, prompt rows), and the pieces of all requests in a
round go out as shared `backend.encode` and `backend.score` calls (split so that rows x padded
length stays within `max_batch_tokens`, shortest first to keep padding small).

Rounds bounded in time. A round holds what the backend runs in about `round_budget_ms`, by the
measured cost of a model token of each stage (app/serving/speed.py: a moving average of the
worker's own calls, seeded by the warm-up), so "a short request waits about one round" means
the same time on every machine and backend. A round is an encode phase, then a score phase: a
request whose text is encoded in the first phase scores its first schema level in the second,
so a short request arriving behind a heavy one is answered after the round in progress and one
more (its own). The first piece of a round always goes, so a single input that takes longer
than the budget (one score row of a slow machine) makes a round of its own.

Order. Requests take their pieces in this order until the round's budget is spent:
1. Urgent requests, earliest deadline first: walking the requests by deadline and adding up
   their estimated remaining work (x ESTIMATE_SAFETY), a request is urgent when the time left
   to its deadline, less that sum, is under URGENT_ROUNDS rounds, and so is every request with
   an earlier deadline. A request's priority thus improves as its deadline nears (deadline-driven
   ageing), and a costly request overtaken by a steady stream of short ones is served before its
   deadline instead of starving. A request that has used AGE_SHARE of its time limit is urgent
   too (ageing by waiting time: a nested request's deeper levels are not in the estimate yet).
2. The others by least attained service (estimated seconds of backend work so far; ties: the
   earlier request): a newcomer goes first, so short requests stay fast next to heavy ones.

Admission predicts completion (`predict_many`, on the event loop, before anything is queued):
a request whose own estimated work cannot fit its time limit is a DeadlineExceeded at once; one
that, with the backlog ahead of it by deadline, would make it or a later-deadline request miss
its deadline is refused with Overloaded (reason `predicted_late`, Retry-After = the excess).
Beyond that, at most `max_queue` requests are admitted (waiting + running); one more is refused
at once, never queued. Before each round the worker drops requests nobody waits for, requests
whose deadline passed, and requests that can no longer finish in time even alone (their
remaining work is over the time left): they are answered at once rather than at their deadline.
Tokens spent on requests that then fail are counted as wasted (uninlu_wasted_tokens_total).

Shutdown (`drain`): from the signal on, every request's limit is the earlier of its deadline
and the instant by which every waiter must have its answer (app/contract/shutdown.py); the
requests that cannot all finish by then are chosen (fewest dropped, the ones with the most work
left) and answered ShuttingDown at once, their remaining steps dropped; the rest run, and any
still unanswered at that instant is answered ShuttingDown then, so nothing outlives the HTTP
server's graceful timeout.

Cancellation: a request whose waiter went away (client disconnect, deadline) is flagged from the
event loop; its pieces are left out of the backend calls still to come in the round, and it is
dropped before the next round; its admission slot is freed.

Why a thread and not the event loop: inference holds a core for milliseconds to seconds, and
the loop must keep answering /health, /metrics and 429s meanwhile. Why one thread: the backend
is not re-entrant and a fast tokenizer shared across threads fails ("Already borrowed").
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from app.model.errors import TooComplex
from app.model.padding import token_batches
from app.model.pipeline import EncodeText, Extraction, Usage, step_lengths
from app.serving.metrics import WASTE_REASONS, Metrics
from app.serving.speed import BackendSpeed

log = logging.getLogger(__name__)

ROUND_BUDGET_MS = 150.0  # default round length (ROUND_BUDGET_MS): bench/README.md, "Heavy requests"
# Work estimates are stretched by this much wherever a deadline depends on them: the speed
# moves with the machine's load, and a nested level's rows are known only once the level above
# is decoded.
ESTIMATE_SAFETY = 1.25
URGENT_ROUNDS = 2  # slack (in rounds) under which a request is served before the others
# Ageing: a request that has used this share of its time limit is urgent whatever its estimate
# says. The estimate knows a nested request's deeper levels only once they start, so a request
# kept back until its slack ran out could find its last level does not fit (bench/README.md,
# "Rounds in time": without it, one nested request in 90 ended as a 504 at 57 s).
AGE_SHARE = 0.25
# While others wait, urgent requests take at most this share of a round before the others take
# theirs (then the urgent ones the rest): ageing must not starve the short requests in turn.
URGENT_SHARE = 0.5


class Overloaded(Exception):
    """Refused at admission; the client should retry after `retry_after` seconds. `reason`:
    queue_full (MAX_QUEUE reached) or predicted_late (the backlog would make a deadline pass)."""

    def __init__(self, message: str, retry_after: int = 1, reason: str = "queue_full"):
        super().__init__(message)
        self.retry_after = retry_after
        self.reason = reason


class NotAccepting(Exception):
    """The batcher is draining or stopped: no new work is taken."""


class DeadlineExceeded(Exception):
    """The request did not finish by its deadline; its remaining steps were dropped. `early`:
    it was stopped (or refused at admission) because its estimated remaining work, `left_s`
    seconds, could no longer fit the time left."""

    def __init__(self, message: str, early: bool = False, left_s: float | None = None):
        super().__init__(message)
        self.early = early
        self.left_s = left_s


class ShuttingDown(Exception):
    """The server is shutting down and the request could not finish within the shutdown budget:
    it was answered at once and its remaining steps dropped; retry on another instance."""

    retry_after = 1


@dataclass(frozen=True)
class Job:
    """What to predict: the arguments of one `Extraction` (schema already validated), the
    admission estimate (model tokens in all, and of them the text windows' tokens: the rest is
    the first schema level's rows) and what it actually cost, which the worker fills in when
    the job ends, whatever the outcome."""

    text: str
    schema: dict
    output_all_prefix: bool = False
    estimated_cost: int | None = None
    estimated_encode: int | None = None
    usage: Usage = field(default_factory=Usage, compare=False)


_sequence = itertools.count()


@dataclass(eq=False)
class _Task:
    job: Job
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    deadline: float | None = None  # time.monotonic() after which the worker drops it
    enqueued: float = field(default_factory=time.perf_counter)
    admitted: float = field(default_factory=time.monotonic)
    seq: int = field(default_factory=lambda: next(_sequence))
    gen: Generator | None = None
    stage: str | None = None  # of the pending step: encode | score (None: not begun or ended)
    pending: collections.deque = field(default_factory=collections.deque)  # step inputs to run
    pending_tokens: int = 0  # their model tokens (read from the event loop: an int, no deque)
    results: list = field(default_factory=list)
    missing: int = 0  # inputs of the step whose results have not arrived
    ran: dict = field(default_factory=lambda: {"encode": 0, "score": 0})  # tokens run per stage
    # Set from the loop thread when nobody waits for the result any more, with why:
    # deadline_exceeded, client_disconnected, shutting_down, error, or done.
    cancelled: str | None = None


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
        round_budget_ms: float = ROUND_BUDGET_MS,
        max_prompt_rows: int | None = None,
        max_request_cost: int | None = None,
        metrics: Metrics | None = None,
        speed: BackendSpeed | None = None,
        extraction_factory: Callable[..., Extraction] | None = None,
    ):
        self.backend = backend
        self.tokenizer = tokenizer
        self.max_batch_tokens = max_batch_tokens
        self.batch_wait = batch_wait_ms / 1000.0
        self.max_batch_requests = max_batch_requests
        self.max_queue = max_queue
        self.round_budget = round_budget_ms / 1000.0
        self.metrics = metrics
        self.speed = speed or BackendSpeed()
        # The extraction enforces the row and cost budgets itself, before it builds a level's rows.
        self._extraction = extraction_factory or partial(
            Extraction, max_prompt_rows=max_prompt_rows, max_cost=max_request_cost
        )
        self._inbox: collections.deque[_Task] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._accepting = True
        self._live: set[_Task] = set()  # admitted and not ended; touched on the loop thread only
        self._answer_by: float | None = None  # drain: monotonic time every waiter is answered by
        self._thread = threading.Thread(target=self._run, name="inference-worker", daemon=True)

    # ---------------------------------------------------------------- estimates (both threads)

    def piece_seconds(self, stage: str, tokens: float) -> float:
        """Estimated backend time of `tokens` model tokens of `stage`. Before any measurement a
        round holds `max_batch_tokens` per stage."""
        per_token = self.speed.per_token(stage)
        if per_token is None:
            per_token = self.round_budget / self.max_batch_tokens
        return tokens * per_token

    def work_left(self, task: _Task) -> float:
        """Estimated seconds of backend work the task still needs: the admission estimate's part
        not yet run (text windows, first-level rows), or the pending step if that is more (a
        nested level, or a job without an estimate)."""
        job = task.job
        encode = score = 0
        if job.estimated_cost is not None and job.estimated_encode is not None:
            encode = job.estimated_encode - task.ran["encode"]
            score = job.estimated_cost - job.estimated_encode - task.ran["score"]
        pending = task.pending_tokens
        if task.stage == "encode":
            encode = max(encode, pending)
        elif task.stage == "score":
            score = max(score, pending)
        return self.piece_seconds("encode", max(encode, 0)) + self.piece_seconds(
            "score", max(score, 0)
        )

    def _limit(self, task: _Task) -> float | None:
        """The task's deadline, or the drain's answer instant when that comes first."""
        limits = [x for x in (task.deadline, self._answer_by) if x is not None]
        return min(limits) if limits else None

    # ---------------------------------------------------------------- event-loop side

    @property
    def admitted(self) -> int:
        return len(self._live)

    def start(self) -> None:
        self._thread.start()

    def stop_admitting(self) -> None:
        """From now on `predict_many` raises NotAccepting; admitted work still finishes."""
        self._accepting = False

    async def predict(self, job: Job, deadline: float | None = None) -> list:
        return (await self.predict_many([job], deadline))[0]

    async def predict_many(self, jobs: Sequence[Job], deadline: float | None = None) -> list[list]:
        """Admit all jobs or none (Overloaded / NotAccepting / DeadlineExceeded raised before any
        await), then wait for their outputs until `deadline` (time.monotonic(); DeadlineExceeded
        after it). A job's model error is raised here; the others' work is dropped. Cancelling
        the caller drops the jobs' remaining steps too."""
        if not self._accepting:
            raise NotAccepting("server is shutting down")
        if len(self._live) + len(jobs) > self.max_queue:
            raise Overloaded(
                f"server is at its limit of {self.max_queue} queued requests; retry later"
            )
        loop = asyncio.get_running_loop()
        tasks = [_Task(job, loop, loop.create_future(), deadline) for job in jobs]
        if deadline is not None:
            self._admission(tasks, deadline)
        self._live.update(tasks)
        self._gauge()
        with self._cond:
            self._inbox.extend(tasks)
            self._cond.notify()
        waiting = asyncio.gather(*(t.future for t in tasks))
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        why = "error"
        try:
            outputs = list(await asyncio.wait_for(waiting, timeout))
            why = "done"
            return outputs
        except TimeoutError:
            why = "deadline_exceeded"
            raise DeadlineExceeded("the request's deadline passed") from None
        except asyncio.CancelledError:
            why = "client_disconnected"
            raise
        except DeadlineExceeded:
            why = "deadline_exceeded"
            raise
        except ShuttingDown:
            why = "shutting_down"
            raise
        finally:  # whatever ended the wait, the worker drops what nobody waits for any more
            for t in tasks:
                t.cancelled = t.cancelled or why

    def _admission(self, tasks: list[_Task], deadline: float) -> None:
        """Refuse at once what cannot finish in time, by the measured speed: the jobs alone
        (DeadlineExceeded), or behind the backlog that the earliest-deadline-first order puts
        ahead of them, or pushing a later-deadline request past its deadline (Overloaded)."""
        if not self.speed.known:
            return
        now = time.monotonic()
        guard = self.round_budget if self._live else 0.0  # the round in progress
        own = sum(self.work_left(t) for t in tasks)
        if own * ESTIMATE_SAFETY + guard > deadline - now:
            raise DeadlineExceeded("cannot finish within its time limit", early=True, left_s=own)
        cum = over = 0.0
        for t in sorted([*self._live, *tasks], key=lambda t: (self._limit(t) or math.inf, t.seq)):
            cum += self.work_left(t)
            limit = self._limit(t)
            if limit is not None and limit >= deadline:
                over = max(over, cum * ESTIMATE_SAFETY + guard - (limit - now))
        if self.metrics:
            self.metrics.backlog_seconds.set(cum - own)
        if over > 0:
            raise Overloaded(
                f"the server's backlog (about {cum - own:.1f} s of model work) would not let this "
                f"request finish within its time limit of {deadline - now:.3g} s; retry later",
                retry_after=max(1, math.ceil(over)),
                reason="predicted_late",
            )

    def drain(self, answer_by: float) -> None:
        """Shutdown: stop admitting; every waiter has its answer by `answer_by` (monotonic).
        The requests that cannot all finish by then are answered ShuttingDown at once: walking
        by limit, whenever the work so far does not fit, the request with the most work left
        is dropped (the fewest requests are dropped; Moore-Hodgson). The others go on, and the
        ones still unanswered at `answer_by` are answered ShuttingDown then."""
        self.stop_admitting()
        self._answer_by = answer_by
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        kept: list[_Task] = []
        cum = self.round_budget  # the round in progress
        shed = 0
        for t in sorted(self._live, key=lambda t: (self._limit(t), t.seq)):
            if t.future.done():
                continue
            kept.append(t)
            cum += self.work_left(t) * ESTIMATE_SAFETY
            if cum > self._limit(t) - now:
                worst = max(kept, key=self.work_left)
                kept.remove(worst)
                cum -= self.work_left(worst) * ESTIMATE_SAFETY
                self._answer_now(worst)
                shed += 1
        log.info(
            "drain: %d requests answered 503 at once, %d go on (answered by %.1f s from now)",
            shed,
            len(kept),
            answer_by - now,
        )
        loop.call_later(max(answer_by - now, 0.0), self._answer_the_rest)

    def _answer_now(self, task: _Task) -> None:
        task.cancelled = "shutting_down"
        if not task.future.done():
            task.future.set_exception(ShuttingDown("the server is shutting down"))

    def _answer_the_rest(self) -> None:
        for t in list(self._live):
            self._answer_now(t)

    def _release(self, task: _Task) -> None:
        self._live.discard(task)
        self._gauge()
        if not self._live and self.metrics:
            self.metrics.backlog_seconds.set(0)

    def _gauge(self) -> None:
        if self.metrics:
            self.metrics.queue_depth.set(len(self._live))

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
        """Close, before they reach the backend again, the requests nobody waits for, those
        whose limit passed, and those that can no longer make it even alone (answered now, not
        at their deadline); their slots are freed."""
        now = time.monotonic()
        for t in active:
            limit = self._limit(t)
            if t.cancelled:
                self._fail(t, None)
            elif limit is None:
                continue
            elif now >= limit or (self.speed.known and self.work_left(t) > limit - now):
                self._fail(t, self._late(t, now))
        return [t for t in active if t.gen is not None]

    def _late(self, task: _Task, now: float) -> Exception:
        if task.deadline is None or (
            self._answer_by is not None and self._answer_by < task.deadline
        ):
            return ShuttingDown("the server is shutting down")
        if now >= task.deadline:
            return DeadlineExceeded("the request's deadline passed")
        left = self.work_left(task)
        return DeadlineExceeded("cannot finish within its time limit", early=True, left_s=left)

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
            step = move(task.gen)
            lengths = step_lengths(step)
            encode = isinstance(step, EncodeText)
            payloads = step.windows if encode else step.rows
            task.pending = collections.deque(
                _Item(task, i, p, n) for i, (p, n) in enumerate(zip(payloads, lengths, strict=True))
            )
            task.pending_tokens = sum(lengths)
            task.stage = "encode" if encode else "score"
            task.results = [None] * len(lengths)
            task.missing = len(lengths)
        except StopIteration as stop:
            task.gen = None
            task.stage = None
            self._resolve(task, stop.value, None)
        except Exception as err:
            self._fail(task, err)

    def _attained(self, task: _Task) -> float:
        return self.piece_seconds("encode", task.ran["encode"]) + self.piece_seconds(
            "score", task.ran["score"]
        )

    def _span(self, task: _Task) -> float:
        """The time the request was given: from admission to its limit."""
        return self._limit(task) - task.admitted

    def _order(self, active: list[_Task]) -> tuple[list[_Task], list[_Task]]:
        """Who takes its pieces first when a round's budget runs out: the urgent requests by
        deadline, then the others by least attained service (ties: the earlier request)."""
        now = time.monotonic()
        timed = sorted(
            (t for t in active if self._limit(t) is not None),
            key=lambda t: (self._limit(t), t.seq),
        )
        guard = URGENT_ROUNDS * self.round_budget
        cum = 0.0
        urgent = 0
        for i, t in enumerate(timed):
            cum += self.work_left(t)
            if self._limit(t) - now - cum * ESTIMATE_SAFETY < guard:
                urgent = i + 1
        aged = {t for t in timed[urgent:] if now - t.admitted > AGE_SHARE * self._span(t)}
        first = [t for i, t in enumerate(timed) if i < urgent or t in aged]
        chosen = set(first)
        rest = sorted(
            (t for t in active if t not in chosen), key=lambda t: (self._attained(t), t.seq)
        )
        return first, rest

    def _round(self, active: list[_Task]) -> None:
        """One round of about `round_budget` seconds of backend work, shared across requests:
        the encode phase, then the score phase (which includes the first level of a text
        encoded in this round)."""
        started = time.perf_counter()
        urgent, rest = self._order(active)
        budget = self.round_budget
        # Urgent requests take their share of the round first, then the others theirs, then the
        # urgent ones what is left: a short request keeps its round next to aged heavy ones.
        cap = budget * URGENT_SHARE if rest else budget
        passes = [(urgent, cap), (rest, budget), (urgent, budget)]
        failed: dict[_Task, Exception] = {}
        # Encode phase: the pieces of the requests in order, keeping the room that the score
        # work of the requests ahead will take in the score phase (reserved once, in the first
        # pass that meets the request).
        planned = 0.0
        encode: list[_Item] = []
        reserved: set[_Task] = set()
        for group, limit in passes:
            for t in group:
                if t.stage == "encode":
                    had = bool(t.pending)
                    planned = self._pick(t, planned, limit, encode)
                    if had and not t.pending and t.job.estimated_cost is not None:
                        first_level = t.job.estimated_cost - (t.job.estimated_encode or 0)
                        planned += min(self.piece_seconds("score", first_level), budget)
                elif t.stage == "score" and t not in reserved:
                    reserved.add(t)
                    planned = self._pick(t, planned, limit, None)
        self._calls("encode", self.backend.encode, encode, failed)
        spent = sum(self.piece_seconds("encode", it.tokens) for it in encode)
        self._settle([t for t in active if t.stage == "encode"], failed)
        # Score phase: what is left of the budget, in the same passes.
        score: list[_Item] = []
        for group, limit in passes:
            for t in group:
                if t.gen is not None and t.stage == "score" and not t.cancelled:
                    spent = self._pick(t, spent, limit, score)
        self._calls("score", self.backend.score, score, failed)
        self._settle([t for t in active if t.stage == "score"], failed)
        if self.metrics:
            self.metrics.round_seconds.observe(time.perf_counter() - started)

    def _pick(self, task: _Task, spent: float, budget: float, into: list | None) -> float:
        """Take the task's pending pieces while they fit the round's budget (the first piece of
        a round always fits: progress); `into` None only reserves their room. The budget spent
        after them."""
        stage, pending = task.stage, task.pending
        if into is None:
            for item in pending:
                cost = self.piece_seconds(stage, item.tokens)
                if spent > 0 and spent + cost > budget:
                    break
                spent += cost
            return spent
        while pending:
            cost = self.piece_seconds(stage, pending[0].tokens)
            if spent > 0 and spent + cost > budget:
                break
            spent += cost
            item = pending.popleft()
            task.pending_tokens -= item.tokens
            into.append(item)
        return spent

    def _settle(self, tasks: list[_Task], failed: dict[_Task, Exception]) -> None:
        """After a phase's calls: fail the tasks a call failed, move on those whose step is
        complete (to span decoding and the next level's step, or the end)."""
        started = time.perf_counter()
        for t in tasks:
            if t in failed:
                self._fail(t, failed.pop(t))
            elif t.gen is not None and t.missing == 0:
                res = t.results
                self._advance(t, lambda gen, res=res: gen.send(res))
        self._observe("decode", started)

    def _calls(self, stage: str, call: Callable, items: list[_Item], failed: dict) -> None:
        """A phase's pieces as backend calls of at most max_batch_tokens; the pieces of a request
        flagged meanwhile (cancelled, or failed in an earlier call) are left out."""
        for part in token_batches([it.tokens for it in items], self.max_batch_tokens):
            chunk = [
                items[i]
                for i in part
                if not items[i].task.cancelled
                and items[i].task.gen is not None
                and items[i].task not in failed
            ]
            if chunk:
                self._call(stage, call, chunk, failed)

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
        self.speed.record(stage, real, time.perf_counter() - started)
        if self.metrics:
            self.metrics.batch_size.observe(len({id(it.task) for it in chunk}))
            self.metrics.backend_tokens.labels(stage, "real").inc(real)
            self.metrics.backend_tokens.labels(stage, "padded").inc(self._padding(stage, chunk))
            per_token = self.speed.per_token(stage)
            if per_token is not None:
                self.metrics.seconds_per_token.labels(stage).set(per_token)
        for it, out in zip(chunk, outputs, strict=True):
            task = it.task
            task.results[it.index] = out
            task.missing -= 1
            task.ran[stage] += it.tokens
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
        task.stage = None
        task.pending.clear()
        task.pending_tokens = 0
        self._resolve(task, None, error)

    def _resolve(self, task: _Task, value: Any, error: BaseException | None) -> None:
        """Hand the outcome to the event loop (thread-safe) and release the admission slot."""
        if self.metrics:
            self.metrics.request_cost_tokens.observe(task.job.usage.tokens)
            self.metrics.request_prompt_rows.observe(task.job.usage.rows)
            if (error is not None or task.cancelled) and task.job.usage.tokens:
                self.metrics.wasted_tokens.labels(_waste_reason(task, error)).inc(
                    task.job.usage.tokens
                )

        def finish() -> None:
            self._release(task)
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


def _waste_reason(task: _Task, error: BaseException | None) -> str:
    """The bounded label of uninlu_wasted_tokens_total for a request that ended without output."""
    if isinstance(error, DeadlineExceeded):
        return "deadline_exceeded"
    if isinstance(error, ShuttingDown):
        return "shutting_down"
    if isinstance(error, TooComplex):
        return "too_complex"
    if error is None and task.cancelled in WASTE_REASONS:
        return task.cancelled
    return "error"
