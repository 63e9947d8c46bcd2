"""A deployment of the model server under an HPA, second by second: the planner's what-if.

What it models, and from what:
- each pod is a queue served at the measured saturated throughput; the latency of what it
  admits is the measured p95 at its offered rate (the latency curve of infra/capacity/capacity.json)
  plus the wait behind its backlog; beyond MAX_QUEUE admitted texts it answers 429, as the
  server does;
- the Service spreads the offered texts evenly over the ready pods;
- a new pod pulls its image, starts, loads the model (the measured start-up-to-ready time)
  and passes its readiness probe before it gets traffic; a removed pod stops getting traffic
  at once;
- the texts metric is what the adapter serves: Prometheus scrapes every pod's
  uninlu_predict_texts_total every `scrape_interval_s` and the rule takes `rate()` over 2 m,
  so the HPA sees the load of the last two minutes, late by up to one scrape;
- with engine keda, the same rates summed over the Deployment (KEDA's prometheus trigger), a
  deleted pod's series included while its samples stay in the 2 m window, read by the same
  controller as an External metric with an AverageValue target (hpa.external_replicas);
- the CPU metric is what metrics-server serves: each pod's CPU use averaged over a 15 s window,
  refreshed every 15 s, in percent of the CPU request;
- the HPA itself is infra.capacity.hpa (the Kubernetes algorithm), synced every 15 s.
Traffic is fluid (texts per second, not single requests): the measured curve already holds
the effect of Poisson arrivals on the latency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from infra.capacity.hpa import (
    SYNC_PERIOD_S,
    Controller,
    PodSample,
    external_replicas,
    metric_replicas,
)

RATE_WINDOW_S = 120.0  # the adapter rule's rate window (infra/monitoring.py RATE_WINDOW)
CPU_WINDOW_S = 15.0  # metrics-server --metric-resolution and the kubelet's CPU window
IDLE_CPU_CORES = 0.02


@dataclass(frozen=True)
class PodModel:
    """One pod's measured behaviour: saturated throughput, latency curve, queue limit, start-up."""

    curve_rates: tuple[float, ...]  # offered texts/s of the measured steps (rising)
    curve_p95_s: tuple[float, ...]  # p95 latency at each of them
    service_rate: float  # texts/s the pod answers when saturated
    max_queue: int  # MAX_QUEUE: admitted texts beyond which the server answers 429
    ready_s: float  # start-up to ready (model load + warm-up), measured
    pull_s: float  # image pull + container start, assumed per stack
    probe_period_s: float  # readiness probe period: readiness is noticed up to this late
    cpus: float  # CPU limit (the capacity was measured pinned to this many)
    cpu_request: float  # the base of the HPA's CPU percentage

    def p95_at(self, rate: float) -> float:
        """The measured p95 at this offered rate (interpolated; held flat outside the curve)."""
        return float(np.interp(rate, self.curve_rates, self.curve_p95_s))


@dataclass(frozen=True)
class Scaling:
    """The HPA's spec: bounds, targets (None turns a metric off), the controller's behaviour
    (tolerances included) and the engine that feeds it the texts metric."""

    min_replicas: int
    max_replicas: int
    target_texts_per_pod: float | None
    target_cpu_percent: int | None
    controller: Controller
    scrape_interval_s: float = 30.0
    engine: Literal["hpa", "keda"] = "hpa"


@dataclass
class Pod:
    created_at: float
    model: PodModel
    queue: float = 0.0
    offered_total: float = 0.0  # the pod's uninlu_predict_texts_total
    scrapes: list[tuple[float, float]] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)  # CPU cores used, per second
    busy_since: float | None = None  # the second busy[0] is about

    @property
    def running_at(self) -> float:
        return self.created_at + self.model.pull_s

    @property
    def ready_at(self) -> float:
        # The probe notices readiness on average half a period late.
        return self.running_at + self.model.ready_s + self.model.probe_period_s / 2

    def is_ready(self, now: float) -> bool:
        return now >= self.ready_at


@dataclass
class Timeline:
    """Per second: offered load, pods (all, ready), p95 of what was admitted, 429s, answers."""

    t: list[float] = field(default_factory=list)
    offered: list[float] = field(default_factory=list)
    pods: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    p95_s: list[float] = field(default_factory=list)
    rejected: list[float] = field(default_factory=list)
    admitted: list[float] = field(default_factory=list)
    scale_events: list[tuple[float, int, int]] = field(default_factory=list)  # (t, from, to)


def _texts_metric(pod: Pod, now: float, scrape_interval: float) -> float | None:
    """rate(uninlu_predict_texts_total[2m]) as Prometheus computes it from the scrapes inside
    the window (at least two), extrapolated to the window by the slope between them."""
    inside = [(at, v) for at, v in pod.scrapes if now - RATE_WINDOW_S < at <= now]
    if len(inside) < 2:
        return None
    (t0, v0), (t1, v1) = inside[0], inside[-1]
    return (v1 - v0) / (t1 - t0)


def _cpu_sample(pod: Pod, now: float) -> tuple[float | None, float]:
    """metrics-server's value at `now`: CPU use over the last full 15 s window, in percent of
    the request, and when that window ended."""
    if pod.busy_since is None:
        return None, -math.inf
    since = pod.busy_since
    window_end = since + math.floor((now - since) / CPU_WINDOW_S) * CPU_WINDOW_S
    first = int(window_end - CPU_WINDOW_S - since)
    if first < 0:
        return None, -math.inf
    used = pod.busy[first : int(window_end - since)]
    percent = 100 * float(np.mean(used)) / pod.model.cpu_request
    return percent, window_end


def simulate(load: np.ndarray, model: PodModel, scaling: Scaling, start_replicas: int) -> Timeline:
    """Run `load` (offered texts/s, one value per second) through the deployment."""
    pods = [Pod(created_at=-10_000.0, model=model) for _ in range(start_replicas)]
    gone: list[Pod] = []  # deleted pods: their series stay in Prometheus's range window
    hpa = scaling.controller
    out = Timeline()
    scrape_phase = scaling.scrape_interval_s
    for second, offered in enumerate(load):
        now = float(second)
        ready = [p for p in pods if p.is_ready(now)]
        share = offered / len(ready) if ready else 0.0
        worst_p95, admitted_total, rejected_total = math.nan, 0.0, 0.0
        for pod in pods:
            if pod.busy_since is None and now >= pod.running_at:
                pod.busy_since = now
            if not pod.is_ready(now):
                if now >= pod.running_at:
                    pod.busy.append(model.cpus)  # loading the model keeps the CPUs busy
                continue
            arriving = share
            pod.offered_total += arriving
            served = min(pod.queue + arriving, model.service_rate)
            backlog = pod.queue + arriving - served
            rejected = max(0.0, backlog - model.max_queue)
            waited = pod.queue / model.service_rate
            pod.queue = backlog - rejected
            admitted = arriving - rejected
            if admitted > 0:
                p95 = model.p95_at(arriving) + waited
                worst_p95 = p95 if math.isnan(worst_p95) else max(worst_p95, p95)
            admitted_total += admitted
            rejected_total += rejected
            utilisation = served / model.service_rate
            pod.busy.append(IDLE_CPU_CORES + (model.cpus - IDLE_CPU_CORES) * utilisation)
        if not ready and offered > 0:
            rejected_total = offered  # no endpoint: every text fails
        for pod in pods:  # Prometheus scrapes the running pods
            if now >= pod.running_at and (now - pod.running_at) % scrape_phase < 1.0:
                pod.scrapes.append((now, pod.offered_total))
        if second % int(SYNC_PERIOD_S) == 0:
            current = len(pods)
            gone = [p for p in gone if p.scrapes and p.scrapes[-1][0] > now - RATE_WINDOW_S]
            proposals = _proposals(pods, now, scaling, current, gone)
            desired = hpa.decide(now, current, proposals)
            if desired != current:
                out.scale_events.append((now, current, desired))
            if desired > current:
                pods += [Pod(created_at=now, model=model) for _ in range(desired - current)]
            elif desired < current:
                # The ReplicaSet deletes unready pods first, then the newest.
                pods.sort(key=lambda p: (p.is_ready(now), -p.created_at), reverse=True)
                gone += pods[desired:]
                del pods[desired:]
        out.t.append(now)
        out.offered.append(float(offered))
        out.pods.append(len(pods))
        out.ready.append(len(ready))
        out.p95_s.append(worst_p95)
        out.rejected.append(rejected_total)
        out.admitted.append(admitted_total)
    return out


def _deployment_texts(pods: list[Pod], now: float, scrape: float) -> float | None:
    """KEDA's query: the sum of the per-pod rates Prometheus has (None: no series at all)."""
    rates = [r for p in pods if (r := _texts_metric(p, now, scrape)) is not None]
    return sum(rates) if rates else None


def _proposals(
    pods: list[Pod], now: float, scaling: Scaling, current: int, gone: Sequence[Pod] = ()
) -> list[int | None]:
    proposals: list[int | None] = []
    tolerances = scaling.controller.tolerances
    target = scaling.target_texts_per_pod
    if target is not None and scaling.engine == "keda":
        total = _deployment_texts([*pods, *gone], now, scaling.scrape_interval_s)
        proposals.append(external_replicas(current, total, target, tolerances))
    elif target is not None:
        samples = [
            PodSample(
                pending=now < p.running_at,
                ready=p.is_ready(now),
                value=_texts_metric(p, now, scaling.scrape_interval_s),
            )
            for p in pods
        ]
        proposals.append(metric_replicas(current, samples, target, "pods", tolerances=tolerances))
    if scaling.target_cpu_percent is not None:
        samples = []
        for p in pods:
            value, sample_at = _cpu_sample(p, now) if now >= p.running_at else (None, -math.inf)
            samples.append(
                PodSample(
                    pending=now < p.running_at,
                    ready=p.is_ready(now),
                    value=value,
                    started_at=p.running_at,
                    ready_since=p.ready_at if p.is_ready(now) else p.running_at,
                    sample_at=sample_at,
                    sample_window=CPU_WINDOW_S,
                )
            )
        proposals.append(
            metric_replicas(
                current, samples, scaling.target_cpu_percent, "cpu", now, tolerances=tolerances
            )
        )
    return proposals


def summarise(run: Timeline, slo_s: float, fixed_replicas: int) -> dict:
    """The figures of one run: peak and time-weighted p95, seconds above the SLO, texts
    answered 429, replica-hours against a fixed deployment of `fixed_replicas`."""
    p95 = np.asarray(run.p95_s, dtype=float)
    served = ~np.isnan(p95)
    hours = len(run.t) / 3600
    replica_hours = float(np.sum(run.pods)) / 3600
    offered = float(np.sum(run.offered))
    return {
        "peak_p95_ms": float(np.nanmax(p95)) * 1000 if served.any() else None,
        "time_weighted_p95_ms": float(np.mean(p95[served])) * 1000 if served.any() else None,
        "seconds_above_slo": int(np.sum(p95[served] > slo_s)),
        "texts_429": float(np.sum(run.rejected)),
        "share_429": float(np.sum(run.rejected)) / offered if offered else 0.0,
        "replica_hours": replica_hours,
        "fixed_replica_hours": fixed_replicas * hours,
        "mean_replicas": float(np.mean(run.pods)),
        "max_replicas_used": int(np.max(run.pods)),
    }


# --- traffic shapes (offered texts/s per second, relative to the stack's peak) --------------------


def shapes(peak: float, minutes: float = 30.0, day_minutes: float = 24 * 60) -> dict:
    """The four shapes the planner compares: a step to the peak, a linear ramp to it, a daily
    curve (night at 15 % of the peak), and a short spike to 3x the peak on top of half of it."""
    n = int(minutes * 60)
    t = np.arange(n, dtype=float)
    step = np.where(t < n / 6, 0.2 * peak, peak)
    ramp = np.clip(0.1 * peak + (peak - 0.1 * peak) * (t - n / 6) / (n / 2), 0.1 * peak, peak)
    days = np.arange(int(day_minutes * 60), dtype=float)
    daily = peak * (0.15 + 0.85 * (1 - np.cos(2 * np.pi * days / days.size)) / 2)
    spike = np.where((t >= n / 3) & (t < n / 3 + 120), 3 * peak, 0.5 * peak)
    return {"step": step, "ramp": ramp, "daily": daily, "spike": spike}
