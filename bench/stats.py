"""The benchmark's figures over its load steps: step lengths, the SLO search over a ladder, what a
taken core leaves. One step's summary (Sample, summarise, percentile, meets_slo) is the
planner's too and lives in infra/capacity/stats.py; it is re-exported here for the bench."""

from __future__ import annotations

from infra.capacity.stats import Sample, meets_slo, percentile, summarise

__all__ = [
    "MIN_STEP_REQUESTS",
    "Sample",
    "max_rate_under_slo",
    "meets_slo",
    "percentile",
    "retained_capacity",
    "retained_share",
    "step_duration",
    "summarise",
]

# Fewest requests one step sends on average: at 0.5 r/s a 15 s step would hold 7, and its p95
# and throughput would be those of a handful of draws.
MIN_STEP_REQUESTS = 30


def step_duration(rate: float, step_seconds: float) -> float:
    """A step lasts `step_seconds`, longer at low rates so it holds MIN_STEP_REQUESTS arrivals."""
    return max(step_seconds, MIN_STEP_REQUESTS / rate)


def max_rate_under_slo(steps: list[dict], slo_p95_s: float) -> dict | None:
    """The step with the highest throughput among those that meet the SLO (None if none does)."""
    good = [s for s in steps if meets_slo(s, slo_p95_s)]
    return max(good, key=lambda s: s["throughput_rps"]) if good else None


def retained_share(quiet: dict, contended: dict) -> float | None:
    """Rate within the SLO with a core taken, as a share of the quiet rate (None without a
    quiet rate within the SLO); 0 when nothing met the SLO under contention."""
    if not quiet.get("max_under_slo"):
        return None
    best = contended.get("max_under_slo")
    return best["throughput_rps"] / quiet["max_under_slo"]["throughput_rps"] if best else 0.0


def retained_capacity(quiet: dict, contended: dict) -> float | None:
    """Saturated throughput (closed loop) with a core taken, as a share of the quiet one: what a
    taken core leaves of a pod's capacity, with no SLO cutting it off (None without both)."""
    q, c = quiet.get("saturated"), contended.get("saturated")
    if not q or not c or not q["throughput_rps"]:
        return None
    return c["throughput_rps"] / q["throughput_rps"]
