"""Adaptive intra-op thread count for the torch backends, chosen from the speed of real calls.

Why: with N threads on a pod's N cores, a core that another process takes (a noisy neighbour,
CFS throttling under a CPU limit) stalls every parallel region at its barrier, and the event
loop's thread competes for what is left: measured on 2 cores with a CPU hog on one, a torch fp32
request took 323 ms with 2 threads and 260 ms with 1, against 219 and 266 ms on a quiet machine.
No fixed count is right for both, nor for every call: small calls gain little from a second
thread, large batches a lot. So the backend keeps a moving average of seconds per token for each
candidate count, per stage (encode, score) and size class (tokens in factors of 4), runs the
faster count, and tries the other every `explore_every` calls of that class, so it notices when
the neighbour leaves (about 3 % of the quiet speed at the default).
"""

from __future__ import annotations

import threading

EXPLORE_EVERY = 16  # calls of one class between two tries of the other thread count
SMOOTHING = 0.25  # weight of a new measurement in the moving average


def size_class(tokens: int) -> int:
    """Calls in the same range of tokens share their measurements: 128-511, 512-2047, ..."""
    return max(int(tokens), 0).bit_length() // 2


class ThreadTuner:
    """`pick(stage, tokens)` before a model call, `record(stage, tokens, threads, seconds)` after.

    Candidates are `most` threads and 1; with `most` == 1 there is nothing to choose."""

    def __init__(self, most: int, explore_every: int = EXPLORE_EVERY, smoothing: float = SMOOTHING):
        if most < 1:
            raise ValueError(f"thread count must be at least 1, got {most}")
        if explore_every < 2:
            raise ValueError(f"explore_every must be at least 2, got {explore_every}")
        self.candidates = (most, 1) if most > 1 else (1,)
        self.explore_every = explore_every
        self.smoothing = smoothing
        self._calls: dict[tuple[str, int], int] = {}
        self._cost: dict[tuple[str, int], dict[int, float]] = {}  # seconds per token
        self._lock = threading.Lock()

    def pick(self, stage: str, tokens: int) -> int:
        """The thread count for the next call: each candidate once, then the faster one, and the
        slower one every `explore_every` calls of the same stage and size class."""
        key = (stage, size_class(tokens))
        with self._lock:
            calls = self._calls[key] = self._calls.get(key, 0) + 1
            cost = self._cost.setdefault(key, {})
            for n in self.candidates:
                if n not in cost:
                    return n
            ranked = sorted(self.candidates, key=cost.__getitem__)
            return ranked[-1] if calls % self.explore_every == 0 else ranked[0]

    def record(self, stage: str, tokens: int, threads: int, seconds: float) -> None:
        """One call's wall time (calls without tokens say nothing)."""
        if tokens <= 0 or seconds < 0 or threads not in self.candidates:
            return
        per_token = seconds / tokens
        with self._lock:
            cost = self._cost.setdefault((stage, size_class(tokens)), {})
            old = cost.get(threads)
            cost[threads] = per_token if old is None else old + self.smoothing * (per_token - old)

    def preferred(self, stage: str, tokens: int) -> int | None:
        """The count the tuner runs now for such a call (None before both were measured)."""
        with self._lock:
            cost = self._cost.get((stage, size_class(tokens)), {})
            if len(cost) < len(self.candidates):
                return None
            return min(self.candidates, key=cost.__getitem__)
