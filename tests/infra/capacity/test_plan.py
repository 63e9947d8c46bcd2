"""`make plan`'s parts that need no measurement: reading the stack, the recommendation worked by
hand, the behaviour it simulates, and a whole `--reuse` run on a recorded capacity."""

from __future__ import annotations

import json

import pytest

from infra.capacity import plan, records
from infra.capacity.hpa import Policy, Rules

RECORD = {
    "runtime": "onnx",
    "cpus": 2.0,
    "slo_p95_ms": 1000,
    "texts_per_second": 5.0,
    "service_rate": 6.25,
    "max_queue": 128,
    "ready_seconds": 4.0,
    "step_seconds": 30,
    "date": "2026-12-01T20:00:00Z",
    "curve": [
        {"offered": 2.0, "throughput": 2.0, "p95_answered_ms": 300.0, "share_429": 0.0},
        {"offered": 5.0, "throughput": 5.0, "p95_answered_ms": 900.0, "share_429": 0.0},
        {"offered": 9.0, "throughput": 6.25, "p95_answered_ms": 20000.0, "share_429": 0.2},
    ],
}


def test_recommendation_worked_by_hand_for_prod():
    settings = plan.stack_settings("prod")  # onnx, CPU request = limit = 2, PDB on
    rec = plan.recommendation(RECORD, settings, peak=25, headroom=0.7)
    values = {key: value for key, (value, _) in rec.items()}
    # 5 x 0.7 = 3.5 texts/s; CPU at 3.5 of 6.25 saturated: 2 x 0.56 / 2 = 56 %; PDB -> 2;
    # ceil(25 / 3.5) = ceil(7.14) = 8.
    assert values == {
        "targetTextsPerSecondPerPod": 3.5,
        "targetCPUUtilizationPercentage": 56,
        "minReplicas": 2,
        "maxReplicas": 8,
    }
    assert all(why for _, why in rec.values())
    assert plan.config_commands("prod", rec)[0] == (
        "pulumi config set --path 'uninlu:autoscaling.targetTextsPerSecondPerPod' 3.5 --stack prod"
    )


def test_dev_cpu_percent_is_of_its_smaller_request():
    settings = plan.stack_settings("dev")  # request 500m, limit 2, no PDB
    rec = plan.recommendation(RECORD, settings, peak=6, headroom=0.7)
    assert rec["minReplicas"][0] == 1
    assert rec["maxReplicas"][0] == 2  # ceil(6 / 3.5)
    assert rec["targetCPUUtilizationPercentage"][0] == 95  # 2 x 0.56 / 0.5 = 224 %, capped


def test_behaviour_is_the_charts_unless_the_stack_sets_one():
    up, down = plan.behaviour(plan.stack_settings("prod"))
    assert up == Rules(0, "Max", (Policy("Percent", 100, 60), Policy("Pods", 2, 60)))
    assert down == Rules(300, "Min", (Policy("Pods", 1, 120),))


def test_tolerances_worked_by_hand():
    """The texts metric's noise at the target: a 120 s Poisson count of 120 x pods x target."""
    rec = plan.recommendation(RECORD, plan.stack_settings("prod"), peak=25, headroom=0.7)
    tolerances = plan.recommend_tolerances(RECORD, rec)
    # Up, at minReplicas 2: 2 / sqrt(120 x 2 x 3.5) = 0.0690 -> 0.07; down, at maxReplicas 8:
    # 2 / sqrt(120 x 8 x 3.5) = 0.0345 -> 0.04.
    assert {key: value for key, (value, _) in tolerances.items()} == {
        "scaleUp": 0.07,
        "scaleDown": 0.04,
    }
    assert "binds only above 25 pods" in tolerances["scaleDown"][1]
    assert plan.tolerance_commands("prod", tolerances) == [
        "pulumi config set --path 'uninlu:autoscaling.behavior.scaleUp.tolerance' 0.07 "
        "--stack prod",
        "pulumi config set --path 'uninlu:autoscaling.behavior.scaleDown.tolerance' 0.04 "
        "--stack prod",
    ]
    # Never slower than the controller's default: a tiny target on one pod is noisy.
    small = {**rec, "targetTextsPerSecondPerPod": (0.5, ""), "minReplicas": (1, "")}
    assert plan.recommend_tolerances(RECORD, small)["scaleUp"][0] == 0.1


def test_behaviour_carries_the_stacks_tolerance():
    settings = plan.stack_settings("prod")
    document = settings.model_dump(by_alias=True, exclude_none=True)
    document["kubernetesVersion"] = "1.35"
    document["autoscaling"]["behavior"] = {"scaleUp": {"tolerance": 0.05}}
    up, down = plan.behaviour(plan.Settings.model_validate(document))
    assert (up.tolerance, down.tolerance) == (0.05, None)
    assert up.policies == (Policy("Percent", 100, 60), Policy("Pods", 2, 60))


def test_unknown_stack_is_a_clear_error():
    with pytest.raises(SystemExit, match=r"no Pulumi\.nope\.yaml"):
        plan.stack_settings("nope")


def test_reuse_plans_from_the_record_without_measuring(tmp_path, capsys):
    record_file = tmp_path / "capacity.json"
    records.save(RECORD, record_file)
    out = tmp_path / "out"
    argv = ["--stack", "prod", "--reuse", "--capacity-file", str(record_file), "--out", str(out)]
    assert plan.main([*argv, "--minutes", "6", "--day-minutes", "12"]) == 0
    printed = capsys.readouterr().out
    assert "targetTextsPerSecondPerPod = 3.5" in printed
    result = json.loads((out / "plan-prod.json").read_text())
    assert {(r["shape"], r["policy"], r["engine"]) for r in result["simulation"]} == {
        (shape, policy, engine)
        for shape in ("step", "ramp", "daily", "spike")
        for policy, engine in (("cpu", "hpa"), ("texts", "hpa"), ("both", "hpa"), ("both", "keda"))
    }
    for row in result["simulation"]:
        assert row["replica_hours"] <= row["fixed_replica_hours"] + 1e-9
        assert 2 <= row["mean_replicas"] <= 8
    # A 3x spike over a 25 texts/s peak cannot be held by 8 pods at 6.25: it must show as 429s.
    spikes = [r for r in result["simulation"] if r["shape"] == "spike"]
    assert all(r["texts_429"] > 0 and r["seconds_above_slo"] > 0 for r in spikes)
    for path in result["plots"]:
        assert (out / path.rsplit("/", 1)[1]).read_bytes()[:4] == b"\x89PNG"
    assert result["seed_figures"]["mean_replicas"] < 8
    # The tolerances: recommended, not applicable on the prod file's Kubernetes 1.30, and
    # simulated against the default on the ramp and the spike for both engines.
    tolerances = result["tolerances"]
    assert tolerances["applies"] is False
    assert "needs 1.35" in printed
    effect = {(r["shape"], r["engine"], r["tolerances"]): r for r in tolerances["effect"]}
    assert set(effect) == {
        (shape, engine, label)
        for shape in ("ramp", "spike")
        for engine in ("hpa", "keda")
        for label in ("default", "recommended")
    }
    for engine in ("hpa", "keda"):
        default, tuned = (
            effect[("ramp", engine, "default")],
            effect[("ramp", engine, "recommended")],
        )
        assert tuned["up"] < default["up"] == 0.1
        # A smaller scale-up tolerance never adds the first pod later on a rising load.
        assert tuned["first_scale_up_s"] <= default["first_scale_up_s"]


def test_reuse_without_a_record_says_what_to_run(tmp_path):
    argv = ["--stack", "prod", "--reuse", "--capacity-file", str(tmp_path / "none.json")]
    with pytest.raises(SystemExit, match="has no onnx record at 2 CPUs"):
        plan.main([*argv, "--out", str(tmp_path)])
