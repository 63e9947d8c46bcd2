"""The deployment simulation: pods as bounded queues, the metric pipeline's delay, and new pods that
serve only once ready (figures worked by hand; no timing)."""

from __future__ import annotations

import numpy as np
import pytest

from infra.capacity.hpa import Controller, Policy, Rules
from infra.capacity.hpa_sim import PodModel, Scaling, shapes, simulate, summarise

MODEL = PodModel(
    curve_rates=(1.0, 2.0, 4.0),
    curve_p95_s=(0.2, 0.3, 0.8),
    service_rate=5.0,
    max_queue=20,
    ready_s=30.0,
    pull_s=20.0,
    probe_period_s=10.0,
    cpus=2.0,
    cpu_request=2.0,
)


def fixed(replicas: int) -> Scaling:
    return Scaling(replicas, replicas, None, None, Controller(replicas, replicas))


def test_one_pod_below_capacity_has_the_measured_latency_and_no_429():
    run = simulate(np.full(120, 3.0), MODEL, fixed(1), start_replicas=1)
    assert sum(run.rejected) == 0
    assert run.p95_s[-1] == pytest.approx(0.55)  # between 0.3 (2/s) and 0.8 (4/s)
    assert set(run.pods) == {1}


def test_one_pod_above_capacity_queues_to_max_queue_then_answers_429():
    run = simulate(np.full(300, 8.0), MODEL, fixed(1), start_replicas=1)
    # 8 offered, 5 served: the backlog grows by 3/s until MAX_QUEUE (20), then 3/s are refused.
    assert sum(run.rejected[:6]) == 0
    assert run.rejected[-1] == pytest.approx(3.0)
    figures = summarise(run, slo_s=1.0, fixed_replicas=1)
    assert figures["share_429"] == pytest.approx(3 / 8, abs=0.01)
    # Latency of an admitted text at the end: the curve's p95 at 8/s (flat: 0.8) + 20 / 5 s.
    assert run.p95_s[-1] == pytest.approx(0.8 + 20 / 5)
    assert figures["seconds_above_slo"] > 0


def test_a_step_scales_out_late_by_the_metric_and_new_pods_serve_only_once_ready():
    up = Rules(0, "Max", (Policy("Percent", 100, 60),))
    down = Rules(300, "Max", (Policy("Pods", 1, 60),))
    scaling = Scaling(1, 6, 4.0, None, Controller(1, 6, up, down), scrape_interval_s=15)
    load = np.where(np.arange(900) < 300, 2.0, 12.0)  # 2 texts/s, then 12 from t=300
    run = simulate(load, MODEL, scaling, start_replicas=1)
    (first, *_) = run.scale_events
    at, before, after = first
    # Nothing before the step; after it, at least two scrapes must show the new rate.
    assert 300 < at <= 300 + 2 * 15 + 15 and (before, after) == (1, 2)
    # The new pod gets traffic only after pull (20 s) + start-up (30 s) + half a probe period.
    ready_at = at + 20 + 30 + 5
    assert all(r == 1 for r in run.ready[int(at) : int(ready_at)])
    assert run.ready[int(ready_at) + 1] >= 2
    assert all(r <= p for r, p in zip(run.ready, run.pods, strict=True))
    # 12 texts/s at 4 per pod: 3 pods in the end, the queue drained, no 429 at the end.
    assert run.pods[-1] == 3 and run.rejected[-1] == 0


def test_keda_reads_the_same_rate_as_a_total_and_reaches_the_same_count():
    up = Rules(0, "Max", (Policy("Percent", 100, 60),))
    down = Rules(300, "Max", (Policy("Pods", 1, 60),))
    load = np.where(np.arange(900) < 300, 2.0, 12.0)
    runs = {}
    for engine in ("hpa", "keda"):
        scaling = Scaling(
            1, 6, 4.0, None, Controller(1, 6, up, down), scrape_interval_s=15, engine=engine
        )
        runs[engine] = simulate(load, MODEL, scaling, start_replicas=1)
    # With every pod ready, ceil(total / target) is ceil(average ratio x pods): the same steps.
    assert runs["keda"].scale_events == runs["hpa"].scale_events
    assert runs["keda"].pods[-1] == 3


def test_a_deleted_pods_series_keeps_counting_in_kedas_total_for_the_rate_window():
    """After a scale-down the gone pod's last samples stay in the 2 m window: KEDA's total
    still holds its load, the adapter's per-pod values do not (the HPA asks only for the pods it
    selects), so KEDA's next scale-down comes later."""
    up = Rules(0, "Max", (Policy("Percent", 100, 60),))
    down = Rules(0, "Max", (Policy("Pods", 1, 15),))
    load = np.where(np.arange(1200) < 400, 12.0, 1.0)
    ends = {}
    for engine in ("hpa", "keda"):
        scaling = Scaling(
            1, 6, 4.0, None, Controller(1, 6, up, down), scrape_interval_s=15, engine=engine
        )
        run = simulate(load, MODEL, scaling, start_replicas=3)
        downs = [t for t, a, b in run.scale_events if b < a]
        ends[engine] = downs
        assert run.pods[-1] == 1
    assert ends["keda"][-1] > ends["hpa"][-1]


def test_shapes_are_relative_to_the_peak():
    got = shapes(10.0, minutes=30, day_minutes=60)
    assert max(got["step"]) == 10.0 and min(got["step"]) == 2.0
    assert max(got["ramp"]) == pytest.approx(10.0) and got["ramp"][0] == pytest.approx(1.0)
    assert max(got["spike"]) == 30.0 and np.sum(got["spike"] == 30.0) == 120
    assert max(got["daily"]) == pytest.approx(10.0, rel=1e-3) and min(got["daily"]) == 1.5
