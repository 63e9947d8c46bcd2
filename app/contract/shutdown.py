"""The shutdown budget: how the seconds of GRACEFUL_SHUTDOWN_SECONDS (stack key
`server.gracefulShutdownSeconds`) are spent, and the pod grace period that covers them.

One place, used by the server (uvicorn's graceful shutdown, the batcher's close) and by the
deploying program (the pod's terminationGracePeriodSeconds), so the parts can never add up to
more than the kubelet allows: at SIGTERM + grace period it kills the process mid-drain.

After the preStop sleep the kubelet sends SIGTERM, and the server, in turn:
1. keeps serving for the drain delay (/ready 503, new predictions refused), so load balancers
   outside the cluster see the pod leave;
2. closes the listener and lets in-flight requests finish (uvicorn's timeout_graceful_shutdown);
3. stops the batcher, whose worker finishes what it still holds (its close timeout).

The request timeout and the budget. REQUEST_TIMEOUT_SECONDS (60 s by default) may well be longer
than what a drain leaves in-flight requests (24 s of the default 30 s budget), so a request's own
limit cannot be what ends it at a shutdown. From the signal on, every admitted request's limit is
the earlier of its deadline and `answer_deadline` (seconds after SIGTERM: the drain delay and
uvicorn's share, less `answer_margin` to write the answers out before uvicorn cancels what is
left, which would be a plain-text 500). The batcher answers at once, with a JSON 503
`shutting_down` and Retry-After, the requests that its estimate says cannot finish by then, and
at `answer_deadline` any still running; the others finish. A request never outlives the budget,
whatever its timeout, and the clients of the ones cut short retry on another pod.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_GRACEFUL_SHUTDOWN_SECONDS = 30
# The batcher's close comes after uvicorn has finished or cancelled every request, so its worker
# holds at most the backend call in progress: a few seconds, never more than a fifth of the budget.
BATCHER_CLOSE_SECONDS = 5.0
BATCHER_CLOSE_SHARE = 0.2
# Between the end of the server's budget and the kubelet's SIGKILL: interpreter exit, log flush.
EXIT_MARGIN_SECONDS = 5
# Between the last answer of a drain and uvicorn's cancel of what is left: the answers' bytes go
# out, and uvicorn's graceful-shutdown clock starts up to one of its 0.1 s ticks late.
ANSWER_MARGIN_SECONDS = 1.0
ANSWER_MARGIN_SHARE = 0.25


class ShutdownBudgetError(ValueError):
    """The drain delay does not fit inside the shutdown budget."""


@dataclass(frozen=True)
class ShutdownBudget:
    drain_delay: float
    http_graceful: int
    batcher_close: float

    @property
    def total(self) -> float:
        return self.drain_delay + self.http_graceful + self.batcher_close

    @property
    def answer_margin(self) -> float:
        """Seconds kept between the last answer and uvicorn's cancel of unfinished requests."""
        return min(ANSWER_MARGIN_SECONDS, self.http_graceful * ANSWER_MARGIN_SHARE)

    @property
    def answer_deadline(self) -> float:
        """Seconds after SIGTERM by which every admitted request has its answer: a 200, or a
        503 shutting_down for those that could not finish. It bounds every in-flight request
        during a drain, whatever REQUEST_TIMEOUT_SECONDS says."""
        return self.drain_delay + self.http_graceful - self.answer_margin


def split(graceful_shutdown_seconds: float, drain_delay_seconds: float = 0.0) -> ShutdownBudget:
    """The drain delay first, then the batcher's share, then the rest for in-flight requests."""
    if drain_delay_seconds > graceful_shutdown_seconds:
        raise ShutdownBudgetError(
            f"DRAIN_DELAY_SECONDS ({drain_delay_seconds:g}) must not exceed "
            f"GRACEFUL_SHUTDOWN_SECONDS ({graceful_shutdown_seconds:g}), the whole shutdown "
            "budget it is part of"
        )
    rest = graceful_shutdown_seconds - drain_delay_seconds
    # uvicorn takes whole seconds; the batcher gets its share plus the fraction left over.
    http = math.floor(rest - min(BATCHER_CLOSE_SECONDS, rest * BATCHER_CLOSE_SHARE))
    return ShutdownBudget(
        drain_delay=drain_delay_seconds, http_graceful=http, batcher_close=rest - http
    )


def termination_grace_period(graceful_shutdown_seconds: float, pre_stop_sleep_seconds: int) -> int:
    """The pod's terminationGracePeriodSeconds: preStop sleep + the whole budget + exit margin."""
    return pre_stop_sleep_seconds + math.ceil(graceful_shutdown_seconds) + EXIT_MARGIN_SECONDS
