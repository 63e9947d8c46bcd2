"""What a model token costs on this machine and backend, in seconds, per backend stage: the
measure the fair scheduler sizes its rounds by and predicts completion times with
(app/serving/batching.py).

Each stage (`encode`, `score`) keeps a token-weighted moving average of the backend calls the
worker makes: the decayed sum of the calls' seconds over the decayed sum of their model tokens.
Large calls weigh in proportion to their tokens, so the per-call overhead of a one-row call does
not make every token look dear; every call multiplies the weight of the past by `DECAY`, so a
machine that slows down (a neighbour takes a core) is followed within a few calls. The server
seeds it with a warm-up measurement before it turns ready (app/serving/server.py).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from app.model.pipeline import row_tokens

STAGES = ("encode", "score")
DECAY = 0.8  # weight of the past at each new call: about the last 5 calls count


class BackendSpeed:
    """Seconds per model token of each backend stage, from the calls the worker measured.

    `recorded` is a test hook (the server sets it from TEST_BACKEND_SECONDS_PER_TOKEN, which only
    tests set): seconds per token per stage taken as measured, from the start and for every call
    instead of the time it took, so that the scheduler's decisions can be driven
    deterministically.

    Written by the worker thread, read by the event loop: each stage's state is one tuple,
    replaced whole."""

    def __init__(self, decay: float = DECAY, recorded: Mapping[str, float] | None = None):
        self.decay = decay
        self.recorded = dict(recorded) if recorded else None
        self._state: dict[str, tuple[float, float]] = dict.fromkeys(STAGES, (0.0, 0.0))

    def record(self, stage: str, tokens: int, seconds: float) -> None:
        """One backend call of `tokens` model tokens took `seconds`."""
        if tokens <= 0:
            return
        if self.recorded is not None:
            seconds = self.recorded[stage] * tokens
        spent, counted = self._state[stage]
        self._state[stage] = (spent * self.decay + seconds, counted * self.decay + tokens)

    def forget(self) -> None:
        """Drop every measurement (after the first warm-up pass, whose calls include the
        runtime's one-off start-up work)."""
        self._state = dict.fromkeys(STAGES, (0.0, 0.0))

    def per_token(self, stage: str) -> float | None:
        """Seconds per model token of `stage`; the other stage's figure while this one has no
        call yet; None before any call."""
        if self.recorded is not None:
            return self.recorded[stage]
        for name in (stage, *(s for s in STAGES if s != stage)):
            spent, counted = self._state[name]
            if counted > 0:
                return spent / counted
        return None

    @property
    def known(self) -> bool:
        return self.per_token(STAGES[0]) is not None

    def describe(self) -> dict[str, float | None]:
        """Milliseconds per 1,000 model tokens by stage, for the log."""
        out = {}
        for stage in STAGES:
            value = self.per_token(stage)
            out[stage] = None if value is None else round(value * 1e6, 3)
        return out


class SlowedBackend:
    """Test hook (TEST_BACKEND_SECONDS_PER_TOKEN, which only tests set): the real backend, each
    call made to last at least its model tokens x the given seconds per token of its stage, so
    that a tiny test checkpoint behaves like a slow machine, deterministically (the scheduler
    records the same figures through BackendSpeed.recorded)."""

    def __init__(self, inner: Any, seconds_per_token: Mapping[str, float]):
        self.inner = inner
        self.seconds_per_token = dict(seconds_per_token)
        self.name = inner.name

    @property
    def padding_added(self) -> dict[str, int]:
        return getattr(self.inner, "padding_added", {})

    def _last(self, stage: str, tokens: int, started: float) -> None:
        left = started + tokens * self.seconds_per_token[stage] - time.perf_counter()
        if left > 0:
            time.sleep(left)

    def encode(self, windows: list) -> list:
        started = time.perf_counter()
        out = self.inner.encode(windows)
        self._last("encode", sum(len(w) for w in windows), started)
        return out

    def score(self, rows: list) -> list:
        started = time.perf_counter()
        out = self.inner.score(rows)
        self._last("score", sum(row_tokens(r) for r in rows), started)
        return out
