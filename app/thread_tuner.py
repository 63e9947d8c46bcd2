"""Adaptive intra-op thread count for the torch backends, chosen from the speed of real calls.

Why: with N threads on a pod's N cores, a core that another process takes (a noisy neighbour,
CFS throttling under a CPU limit) stalls every parallel region at its barrier, and the event
loop's thread competes for what is left: measured on 2 cores with a CPU hog on one, the torch
server held 1.40 requests/s with 2 threads and 2.71 with 1, while 2 threads are about 1.5x as
fast as 1 on a quiet machine. No fixed count is right for both, so the backend keeps a moving
average of seconds per padded token for each candidate count, per stage (encode and score calls
differ in shape), runs the faster one, and tries the other every `explore_every` calls of that
stage so it notices when the neighbour leaves (about 3 % of the quiet speed at the default).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

EXPLORE_EVERY = 16  # calls of one stage between two tries of the other thread count
SMOOTHING = 0.25  # weight of a new measurement in the moving average


@dataclass
class _Stage:
    calls: int = 0
    seconds_per_token: dict[int, float] = field(default_factory=dict)


class ThreadTuner:
    """`pick(stage)` before a model call, `record(stage, threads, seconds, tokens)` after it.

    Candidates are `most` threads and 1; with `most` == 1 there is nothing to choose."""

    def __init__(self, most: int, explore_every: int = EXPLORE_EVERY, smoothing: float = SMOOTHING):
        if most < 1:
            raise ValueError(f"thread count must be at least 1, got {most}")
        if explore_every < 2:
            raise ValueError(f"explore_every must be at least 2, got {explore_every}")
        self.candidates = (most, 1) if most > 1 else (1,)
        self.explore_every = explore_every
        self.smoothing = smoothing
        self._stages: dict[str, _Stage] = {}
        self._lock = threading.Lock()

    def pick(self, stage: str) -> int:
        """The thread count for the next call of `stage`: each candidate once, then the faster
        one, and the slower one every `explore_every` calls."""
        with self._lock:
            s = self._stages.setdefault(stage, _Stage())
            s.calls += 1
            for n in self.candidates:
                if n not in s.seconds_per_token:
                    return n
            ranked = sorted(self.candidates, key=s.seconds_per_token.__getitem__)
            return ranked[-1] if s.calls % self.explore_every == 0 else ranked[0]

    def record(self, stage: str, threads: int, seconds: float, tokens: int) -> None:
        """One call's wall time for `tokens` padded tokens (calls without tokens say nothing)."""
        if tokens <= 0 or seconds < 0 or threads not in self.candidates:
            return
        cost = seconds / tokens
        with self._lock:
            s = self._stages.setdefault(stage, _Stage())
            old = s.seconds_per_token.get(threads)
            s.seconds_per_token[threads] = (
                cost if old is None else old + self.smoothing * (cost - old)
            )

    def preferred(self, stage: str) -> int | None:
        """The count the tuner runs now for `stage` (None before both were measured)."""
        with self._lock:
            s = self._stages.get(stage)
            if s is None or len(s.seconds_per_token) < len(self.candidates):
                return None
            return min(self.candidates, key=s.seconds_per_token.__getitem__)
