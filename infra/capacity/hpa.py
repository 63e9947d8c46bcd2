"""The HorizontalPodAutoscaler's decision, as kubernetes/kubernetes implements it (autoscaling/v2),
for the planner's simulation.

Modelled on pkg/controller/podautoscaler of kubernetes/kubernetes:
- replica_calculator.go: `GetResourceReplicas` / `GetMetricReplicas` (calcPlainMetricReplicas):
  the usage ratio, the tolerances (`Tolerances.isWithin`: 10 % either way unless the HPA's
  behavior sets `scaleUp.tolerance` / `scaleDown.tolerance`, KEP-4951), and the pods without a
  usable sample (pending or unready pods, pods with no metric yet), which are left out and then,
  depending on the direction, counted at 0 or at the target; `GetExternalPerPodMetricReplicas`:
  an External metric with an AverageValue target (what KEDA's HPA reads), the total against the
  target times the current replicas, and then ceil(total / target) whatever the pods;
- pod_filters / groupPods: Pending pods are "unready" for every metric; for CPU a running pod
  is also unready while it starts (not ready, or no full metric window since it became ready,
  within the 5 min CPU initialisation period);
- horizontal.go: `computeReplicasForMetrics` (the largest proposal over the metrics; an invalid
  metric blocks a scale-down), `stabilizeRecommendationWithBehaviors` (the windows of past
  recommendations), `convertDesiredReplicasWithBehaviorRate` with
  `calculateScaleUpLimitWithScalingRules` / `calculateScaleDownLimitWithBehaviors` and
  `getReplicasChangePerPeriod` (policies per period, selectPolicy, min/max clamps).
The code is our own; only the behaviour follows upstream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

TOLERANCE = 0.1  # --horizontal-pod-autoscaler-tolerance
SYNC_PERIOD_S = 15.0  # --horizontal-pod-autoscaler-sync-period
CPU_INITIALIZATION_PERIOD_S = 300.0  # --horizontal-pod-autoscaler-cpu-initialization-period
DELAY_OF_INITIAL_READINESS_S = 30.0  # --horizontal-pod-autoscaler-initial-readiness-delay


@dataclass(frozen=True)
class PodSample:
    """What the controller sees of one pod at a sync: its phase and readiness, and its metric
    sample (None: the metrics API has no value for it)."""

    pending: bool = False
    ready: bool = True
    value: float | None = None
    started_at: float = -math.inf  # when the pod began running
    ready_since: float = -math.inf  # last readiness transition (to ready, or to unready)
    sample_at: float = math.inf  # end of the metric's window (CPU)
    sample_window: float = 15.0


@dataclass(frozen=True)
class Tolerances:
    """The dead band of the usage ratio: no change while 1 - scale_down <= ratio <= 1 + scale_up
    (replica_calculator.go `Tolerances.isWithin`; with both at the default it is the older
    |1 - ratio| <= tolerance)."""

    scale_up: float = TOLERANCE
    scale_down: float = TOLERANCE

    def within(self, ratio: float) -> bool:
        return 1.0 - self.scale_down <= ratio <= 1.0 + self.scale_up


DEFAULT_TOLERANCES = Tolerances()


def _cpu_unready(pod: PodSample, now: float) -> bool:
    """groupPods for CPU: a starting pod's sample is ignored until it is ready and one whole
    metric window was collected after that; later only a pod that never became ready is."""
    if pod.started_at + CPU_INITIALIZATION_PERIOD_S > now:
        return not pod.ready or pod.sample_at < pod.ready_since + pod.sample_window
    return not pod.ready and pod.started_at + DELAY_OF_INITIAL_READINESS_S > pod.ready_since


def metric_replicas(
    current: int,
    pods: list[PodSample],
    target: float,
    kind: Literal["cpu", "pods"],
    now: float = 0.0,
    missing_on_scale_down: float | None = None,
    tolerances: Tolerances = DEFAULT_TOLERANCES,
) -> int | None:
    """Replicas one metric asks for, or None when no pod has a usable sample (an invalid metric).

    `target` is the per-pod average (CPU: utilisation in percent of the request; pods: the
    metric's AverageValue). On a scale-down a pod without a sample counts as using
    `missing_on_scale_down` (CPU: 100 % of its request; pods: the target), on a scale-up as 0.
    """
    if missing_on_scale_down is None:
        missing_on_scale_down = 100.0 if kind == "cpu" else target
    values: list[float] = []
    unready = missing = 0
    for pod in pods:
        if pod.pending:
            unready += 1
        elif pod.value is None:
            missing += 1
        elif kind == "cpu" and _cpu_unready(pod, now):
            unready += 1
        else:
            values.append(pod.value)
    if not values:
        return None
    ratio = sum(values) / len(values) / target
    scale_up_with_unready = unready > 0 and ratio > 1.0
    if not scale_up_with_unready and missing == 0:
        if tolerances.within(ratio):
            return current
        return math.ceil(ratio * len(values))
    filled = list(values)
    if missing:
        filled += [missing_on_scale_down if ratio < 1.0 else 0.0] * missing
    if scale_up_with_unready:
        filled += [0.0] * unready
    new_ratio = sum(filled) / len(filled) / target
    flipped = (ratio < 1.0 < new_ratio) or (new_ratio < 1.0 < ratio)
    if tolerances.within(new_ratio) or flipped:
        return current  # too small a change, or the fill-in flipped the direction
    proposal = math.ceil(new_ratio * len(filled))
    if (new_ratio < 1.0 and proposal > current) or (new_ratio > 1.0 and proposal < current):
        return current
    return proposal


def external_replicas(
    status_replicas: int,
    total: float | None,
    target: float,
    tolerances: Tolerances = DEFAULT_TOLERANCES,
) -> int | None:
    """Replicas an External metric with an AverageValue target asks for (the HPA KEDA owns, its
    prometheus trigger returning the Deployment's total), or None when the metric cannot be read.

    The tolerance is checked on the total against the target times the current replicas (every
    pod of the Deployment, ready or not); outside it the proposal is ceil(total / target),
    whatever the current count."""
    if total is None or status_replicas <= 0:
        return None
    if tolerances.within(total / (target * status_replicas)):
        return status_replicas
    return math.ceil(total / target)


@dataclass(frozen=True)
class Policy:
    type: Literal["Pods", "Percent"]
    value: int
    period_seconds: int


@dataclass(frozen=True)
class Rules:
    """HPAScalingRules of one direction (tolerance None: the controller's TOLERANCE)."""

    stabilization_window_seconds: int
    select_policy: Literal["Max", "Min", "Disabled"] = "Max"
    policies: tuple[Policy, ...] = ()
    tolerance: float | None = None


# The API server's defaults for autoscaling/v2 behavior (pkg/apis/autoscaling/v2/defaults.go).
DEFAULT_SCALE_UP = Rules(0, "Max", (Policy("Pods", 4, 15), Policy("Percent", 100, 15)))
DEFAULT_SCALE_DOWN = Rules(300, "Max", (Policy("Percent", 100, 15),))


@dataclass
class Controller:
    """One HPA: min/max replicas, behaviour, and the history the behaviour needs (past
    recommendations for the stabilisation windows, past scale events for the policies)."""

    min_replicas: int
    max_replicas: int
    scale_up: Rules = DEFAULT_SCALE_UP
    scale_down: Rules = DEFAULT_SCALE_DOWN
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    up_events: list[tuple[float, int]] = field(default_factory=list)
    down_events: list[tuple[float, int]] = field(default_factory=list)

    @property
    def tolerances(self) -> Tolerances:
        """Each direction's tolerance from the behaviour, else the controller-wide one."""
        up, down = self.scale_up.tolerance, self.scale_down.tolerance
        return Tolerances(TOLERANCE if up is None else up, TOLERANCE if down is None else down)

    def decide(self, now: float, current: int, proposals: list[int | None]) -> int:
        """The replica count after one sync (reconcileAutoscaler): the scale target's count when
        out of [min, max]; else the largest metric proposal, stabilised and rate-limited."""
        if current == 0:
            return 0  # scaling disabled (replicas set to 0 by hand)
        if current > self.max_replicas:
            desired = self.max_replicas
        elif current < self.min_replicas:
            desired = self.min_replicas
        else:
            valid = [p for p in proposals if p is not None]
            if not valid:
                return current  # no metric works: FailedGetMetrics, nothing changes
            desired = max(valid)
            if len(valid) < len(proposals) and desired < current:
                return current  # an invalid metric never lets the others scale down
            desired = self._stabilise(now, current, desired)
            desired = self._limit_rate(now, current, desired)
        if desired != current:
            events = self.up_events if desired > current else self.down_events
            events.append((now, abs(desired - current)))
        return desired

    def _stabilise(self, now: float, current: int, desired: int) -> int:
        """Scale up to at most the lowest, down to at least the highest recommendation of the
        respective window (the newest recommendation included)."""
        if not self.recommendations:  # maybeInitScaleDownStabilizationWindow: a fresh HPA
            self.recommendations.append((now, current))  # does not scale down at once
        up_cutoff = now - self.scale_up.stabilization_window_seconds
        down_cutoff = now - self.scale_down.stabilization_window_seconds
        up, down = desired, desired
        for at, recommended in self.recommendations:
            if at > up_cutoff:  # strictly after the cutoff, as time.After
                up = min(up, recommended)
            if at > down_cutoff:
                down = max(down, recommended)
        oldest = min(up_cutoff, down_cutoff)  # what neither window looks at is dropped
        self.recommendations = [r for r in self.recommendations if r[0] > oldest]
        self.recommendations.append((now, desired))
        return min(max(current, up), down)

    def _limit_rate(self, now: float, current: int, desired: int) -> int:
        if desired > current:
            limit = max(self._policy_limit(self.scale_up, now, current, up=True), current)
            return min(desired, limit, self.max_replicas)
        if desired < current:
            limit = min(self._policy_limit(self.scale_down, now, current, up=False), current)
            return max(desired, limit, self.min_replicas)
        return desired

    def _changed_within(self, events: list[tuple[float, int]], period: int, now: float) -> int:
        return sum(change for at, change in events if at > now - period)

    def _period_start(self, policy: Policy, current: int, now: float) -> int:
        added = self._changed_within(self.up_events, policy.period_seconds, now)
        removed = self._changed_within(self.down_events, policy.period_seconds, now)
        return current - added + removed

    def _policy_limit(self, rules: Rules, now: float, current: int, up: bool) -> int:
        """The furthest count the policies allow from where each period started; selectPolicy
        Max takes the largest change (the highest count up, the lowest down), Min the smallest."""
        if rules.select_policy == "Disabled":
            return current
        pick = max if (rules.select_policy != "Min") == up else min
        proposals = []
        for policy in rules.policies:
            start = self._period_start(policy, current, now)
            if policy.type == "Pods":
                proposals.append(start + policy.value if up else start - policy.value)
            elif up:  # rounded up, or a small deployment could never grow
                proposals.append(math.ceil(start * (1 + policy.value / 100)))
            else:
                proposals.append(int(start * (1 - policy.value / 100)))
        return pick(proposals)
