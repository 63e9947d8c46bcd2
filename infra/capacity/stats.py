"""Summaries of one load step: throughput, latency percentiles, errors, the SLO test.

Shared by the planner's SLO search (infra/capacity/measure.py) and the benchmark (bench/), which
adds its own figures over many steps in bench/stats.py.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sample:
    """One request of a load step: sent when (s from step start), how long it took, outcome."""

    sent_at: float
    latency: float
    status: int  # HTTP status, or 0 when the request failed without a response (timeout, reset)
    error: str = ""
    body_index: int = -1  # which body of the mix was sent (to add up its model FLOPs)


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else None


def summarise(samples: list[Sample], offered_rate: float, duration: float) -> dict:
    """Figures of one open-loop step. Throughput is successful responses per second from the
    step's start until its last response (or the arrival window, if longer), so an overloaded
    server cannot look faster than it answers. Latency percentiles are over every request,
    failed ones included, so a server that fails fast cannot look quick."""
    ok = [s for s in samples if s.status == 200]
    span = max(duration, max((s.sent_at + s.latency for s in samples), default=0.0))
    latencies = [s.latency for s in samples]
    errors = Counter(str(s.status) if s.status else (s.error or "no response") for s in samples)
    errors.pop("200", None)
    # The seed-style peer's tokenizer race: 500 answers carrying "Already borrowed".
    borrowed = sum(1 for s in samples if s.status >= 500 and "Already borrowed" in s.error)
    return {
        "offered_rps": offered_rate,
        "sent": len(samples),
        "arrival_rps": len(samples) / duration if duration > 0 else 0.0,
        "ok": len(ok),
        "errors": sum(errors.values()),
        "errors_by_kind": dict(errors),
        "already_borrowed": borrowed,
        "window_s": span,
        "throughput_rps": len(ok) / span if span > 0 else 0.0,
        "p50_s": percentile(latencies, 50),
        "p95_s": percentile(latencies, 95),
        "p99_s": percentile(latencies, 99),
        "max_s": max(latencies) if latencies else None,
    }


def meets_slo(step: dict, slo_p95_s: float) -> bool:
    """A step meets the SLO when nothing failed and p95 latency is within the bound."""
    return step["sent"] > 0 and step["errors"] == 0 and (step["p95_s"] or 0.0) <= slo_p95_s
