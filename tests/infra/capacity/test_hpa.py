"""The HPA controller of the planner against cases worked by hand from the Kubernetes algorithm
(pkg/controller/podautoscaler: replica_calculator.go, horizontal.go)."""

from __future__ import annotations

from infra.capacity.hpa import (
    DEFAULT_SCALE_DOWN,
    Controller,
    PodSample,
    Policy,
    Rules,
    Tolerances,
    external_replicas,
    metric_replicas,
)


def pods(*values: float | None) -> list[PodSample]:
    return [PodSample(value=v) for v in values]


# --- the ratio and the tolerance ------------------------------------------------------------


def test_ratio_formula_rounds_up():
    # 3 pods at 9, 8, 7 texts/s against a target of 5: ratio 8/5 = 1.6, ceil(1.6 * 3) = 5.
    assert metric_replicas(3, pods(9, 8, 7), target=5, kind="pods") == 5
    # 4 pods at 30 % CPU against 60 %: ratio 0.5, ceil(0.5 * 4) = 2.
    assert metric_replicas(4, pods(30, 30, 30, 30), target=60, kind="cpu") == 2


def test_within_ten_percent_nothing_changes():
    # ratio 5.4 / 5 = 1.08 and 4.6 / 5 = 0.92: |1 - ratio| <= 0.1 keeps the current count...
    assert metric_replicas(3, pods(5.4, 5.4, 5.4), target=5, kind="pods") == 3
    assert metric_replicas(3, pods(4.6, 4.6, 4.6), target=5, kind="pods") == 3
    # ... 5.6 / 5 = 1.12 does not: ceil(1.12 * 3) = ceil(3.36) = 4.
    assert metric_replicas(3, pods(5.6, 5.6, 5.6), target=5, kind="pods") == 4


def test_tolerances_per_direction():
    # 1.08 is within the default 10 % but not within a 5 % scale-up tolerance: ceil(3.24) = 4.
    tight_up = Tolerances(scale_up=0.05, scale_down=0.1)
    assert metric_replicas(3, pods(5.4, 5.4, 5.4), target=5, kind="pods", tolerances=tight_up) == 4
    # ... while 0.92 stays within its 10 % scale-down tolerance: keep 3.
    assert metric_replicas(3, pods(4.6, 4.6, 4.6), target=5, kind="pods", tolerances=tight_up) == 3
    # Bounds are inclusive (isWithin: 1 - down <= ratio <= 1 + up): 0.75 with down 0.25 keeps 4.
    wide_down = Tolerances(scale_up=0.1, scale_down=0.25)
    assert metric_replicas(4, pods(3, 3, 3, 3), 4, "pods", tolerances=wide_down) == 4
    assert metric_replicas(4, pods(3, 3, 3, 3), 4, "pods") == 3  # default: ceil(0.75 * 4)
    # The fill-in pass uses the same tolerances: 2 pods at 8, one without a sample (0 on a
    # scale-up): 16 / 3 / 5 = 1.067 -> within 10 % (keep 3), not within 5 % -> ceil(3.2) = 4.
    assert metric_replicas(3, pods(8, 8, None), 5, "pods", tolerances=tight_up) == 4


def test_the_controller_takes_each_directions_tolerance_from_its_behaviour():
    up = Rules(0, "Max", (Policy("Pods", 4, 15),), tolerance=0.02)
    assert Controller(1, 5, up, DEFAULT_SCALE_DOWN).tolerances == Tolerances(0.02, 0.1)
    assert Controller(1, 5).tolerances == Tolerances(0.1, 0.1)


def test_external_average_value_asks_for_the_total_over_the_target():
    """GetExternalPerPodMetricReplicas: KEDA's total against target x current replicas; outside
    the tolerance ceil(total / target), whatever the current count."""
    # 4 pods, 30 texts/s in all against 5 per pod: 30 / 20 = 1.5 -> ceil(30 / 5) = 6.
    assert external_replicas(4, 30.0, 5.0) == 6
    # 21 / 20 = 1.05: within 10 % -> keep 4; not within a 2 % scale-up tolerance -> ceil(4.2) = 5.
    assert external_replicas(4, 21.0, 5.0) == 4
    assert external_replicas(4, 21.0, 5.0, Tolerances(0.02, 0.1)) == 5
    # 9 / 20 = 0.45 -> ceil(1.8) = 2 (scale-down; the controller clamps to minReplicas).
    assert external_replicas(4, 9.0, 5.0) == 2
    # Unready pods count in the current replicas, not in the proposal: 2 ready pods at 8 texts/s
    # and 2 starting ones (16 in all): 16 / 20 = 0.8 -> ceil(3.2) = 4 = current.
    assert external_replicas(4, 16.0, 5.0) == 4
    assert external_replicas(4, None, 5.0) is None  # Prometheus unreadable: an invalid metric


def test_no_usable_sample_is_an_invalid_metric():
    assert metric_replicas(2, pods(None, None), target=5, kind="pods") is None
    assert metric_replicas(1, [PodSample(pending=True)], target=5, kind="pods") is None


# --- pods without a usable sample -------------------------------------------------------------


def test_pod_not_yet_ready_counts_zero_on_a_scale_up():
    # 2 ready pods at 10 texts/s (target 5: ratio 2.0) and one pending pod. Scaling up with an
    # unready pod re-runs the ratio with it at 0: (10 + 10 + 0) / 3 / 5 = 1.333, ceil(1.333 * 3)
    # = 4 (without the pending pod it would have been ceil(2.0 * 2) = 4 as well; with two
    # pending pods: 20 / 4 / 5 = 1.0 -> within tolerance, keep 4).
    three = [PodSample(value=10), PodSample(value=10), PodSample(pending=True)]
    assert metric_replicas(3, three, target=5, kind="pods") == 4
    four = [*three, PodSample(pending=True)]
    assert metric_replicas(4, four, target=5, kind="pods") == 4
    # At 20 texts/s per ready pod: (20 + 20 + 0) / 3 / 5 = 2.667 -> ceil(8) = 8.
    hot = [PodSample(value=20), PodSample(value=20), PodSample(pending=True)]
    assert metric_replicas(3, hot, target=5, kind="pods") == 8


def test_unready_pods_are_ignored_on_a_scale_down():
    # 2 ready pods at 1 text/s (ratio 0.2) and a pending one: no rebalancing on a scale-down,
    # so ceil(0.2 * 2) = 1.
    low = [PodSample(value=1), PodSample(value=1), PodSample(pending=True)]
    assert metric_replicas(3, low, target=5, kind="pods") == 1


def test_missing_metric_counts_as_the_target_on_a_scale_down_and_zero_on_a_scale_up():
    # Scale-down: 2 pods at 2 texts/s and one without a sample (counted at the target 5):
    # (2 + 2 + 5) / 3 / 5 = 0.6 -> ceil(0.6 * 3) = 2.
    assert metric_replicas(3, pods(2, 2, None), target=5, kind="pods") == 2
    # Scale-up: 2 pods at 8 and one without a sample (counted at 0): 16 / 3 / 5 = 1.067, within
    # the tolerance -> keep 3 (the ready pods alone would have asked for ceil(1.6 * 2) = 4).
    assert metric_replicas(3, pods(8, 8, None), target=5, kind="pods") == 3
    # CPU counts a missing pod at 100 % of its request on a scale-down:
    # (20 + 20 + 100) / 3 / 60 = 0.778 -> ceil(0.778 * 3) = 3 = current.
    assert metric_replicas(3, pods(20, 20, None), target=60, kind="cpu") == 3


def test_cpu_sample_of_a_starting_pod_is_ignored_until_a_window_after_ready():
    now = 100.0
    # Running for 40 s, ready since 90 s, the sample window (15 s) ends at 100 < 90 + 15: the
    # pod is unready for CPU although ready, so on a scale-up it is counted at 0:
    # ready pods 90 %, 90 % against 60 % -> ratio 1.5; with the new pod at 0: 180 / 3 / 60 = 1.0.
    fresh = PodSample(value=90, started_at=60, ready_since=90, sample_at=100, sample_window=15)
    old = PodSample(value=90, started_at=-1000, ready_since=-900, sample_at=100)
    assert metric_replicas(3, [old, old, fresh], target=60, kind="cpu", now=now) == 3
    # The same pod with a full window after readiness counts: ratio 1.5 -> ceil(4.5) = 5.
    settled = PodSample(value=90, started_at=60, ready_since=80, sample_at=100, sample_window=15)
    assert metric_replicas(3, [old, old, settled], target=60, kind="cpu", now=now) == 5
    # The texts metric has no such rule: the fresh pod's sample counts as it is.
    assert metric_replicas(3, [old, old, fresh], target=60, kind="pods", now=now) == 5


# --- the controller: max over metrics, clamps, policies, stabilisation --------------------------

UP = Rules(0, "Max", (Policy("Percent", 100, 60), Policy("Pods", 2, 60)))
DOWN = Rules(300, "Min", (Policy("Pods", 1, 120),))


def test_largest_proposal_wins_and_an_invalid_metric_blocks_only_scale_down():
    hpa = Controller(1, 10, UP, DOWN)
    assert hpa.decide(0, 2, [3, 4]) == 4
    hpa = Controller(1, 10, UP, Rules(0, "Max", (Policy("Percent", 100, 15),)))
    assert hpa.decide(0, 4, [2, None]) == 4  # would scale down: blocked
    assert hpa.decide(15, 4, [6, None]) == 6  # scale up with the valid metric


def test_min_and_max_clamp():
    hpa = Controller(
        2, 5, Rules(0, "Max", (Policy("Pods", 100, 15),)), Rules(0, "Max", DOWN.policies)
    )
    assert hpa.decide(0, 3, [40]) == 5  # never above maxReplicas
    hpa = Controller(2, 5, UP, Rules(0, "Max", (Policy("Percent", 100, 15),)))
    assert hpa.decide(0, 3, [1]) == 2  # never below minReplicas
    assert Controller(2, 5).decide(0, 7, [7]) == 5  # out of range: straight to the bound
    assert Controller(2, 5).decide(0, 1, [1]) == 2


def test_scale_up_policy_limit_per_period_and_select_policy():
    # From 3 pods: Percent 100 allows 6, Pods 2 allows 5; selectPolicy Max -> 6 (desired 10).
    hpa = Controller(1, 20, UP, DOWN)
    assert hpa.decide(0, 3, [10]) == 6
    # 30 s later, still within the 60 s period that started at 3 pods: the limit is still 6.
    assert hpa.decide(30, 6, [10]) == 6
    # 61 s after the event the period starts at 6: Percent allows 12, Pods 8 -> 10 (desired).
    assert hpa.decide(61, 6, [10]) == 10
    # selectPolicy Min takes the smaller change: from 3, min(6, 5) = 5.
    cautious = Controller(1, 20, Rules(0, "Min", UP.policies), DOWN)
    assert cautious.decide(0, 3, [10]) == 5
    disabled = Controller(1, 20, Rules(0, "Disabled", UP.policies), DOWN)
    assert disabled.decide(0, 3, [10]) == 3


def test_scale_down_waits_for_the_stabilisation_window_then_one_pod_per_period():
    hpa = Controller(1, 10, UP, DOWN)
    assert hpa.decide(0, 6, [6]) == 6  # recommendation 6 recorded at t=0
    # Load drops: the metric asks for 2 from t=15 on. The highest recommendation of the last
    # 300 s is 6 (t=0), so the count stays 6 while t=0 is inside the window (after now - 300).
    for t in range(15, 300, 15):
        assert hpa.decide(t, 6, [2]) == 6, t
    # At t=300 the window holds only 2s: stabilised 2, but the policy removes 1 pod per 120 s.
    assert hpa.decide(300, 6, [2]) == 5
    assert hpa.decide(315, 5, [2]) == 5  # same period: started at 5 + 1 = 6, 6 - 1 = 5
    assert hpa.decide(405, 5, [2]) == 5  # the event at 300 is not yet 120 s old
    assert hpa.decide(420, 5, [2]) == 4  # at 120 s it is out of the period: the next pod


def test_scale_up_is_not_delayed_by_the_scale_down_window():
    hpa = Controller(1, 10, UP, DOWN)
    assert hpa.decide(0, 4, [2]) == 4  # recommendation 2 is not an obstacle upwards
    # Up at once (window 0): from 4, max(+100 % = 8, +2 pods = 6) = 8 of the desired 10.
    assert hpa.decide(15, 4, [10]) == 8


def test_default_behaviour_is_the_api_servers():
    assert DEFAULT_SCALE_DOWN.stabilization_window_seconds == 300
    hpa = Controller(1, 100)
    # Default scale-up: max(+4 pods, +100 %) per 15 s: from 2 -> max(6, 4) = 6.
    assert hpa.decide(0, 2, [50]) == 6


def test_scale_down_select_policy_picks_the_largest_or_smallest_change():
    # From 6 pods: Percent 50 allows int(6 * 0.5) = 3, Pods 1 allows 5.
    policies = (Policy("Percent", 50, 60), Policy("Pods", 1, 60))
    largest = Controller(1, 10, UP, Rules(0, "Max", policies))
    assert largest.decide(0, 6, [1]) == 3
    smallest = Controller(1, 10, UP, Rules(0, "Min", policies))
    assert smallest.decide(0, 6, [1]) == 5
