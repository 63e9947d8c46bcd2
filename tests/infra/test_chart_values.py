"""The chart's values: every value documented in values.yaml, and bad values, impossible
combinations and removed values refused at render time with a message naming them."""

from __future__ import annotations

import re

import pytest
import yaml
from chart_cases import pod_spec

from app.serving.settings import Settings
from infra.chart_render import CHART_DIR, ChartError, find, render_chart, validate_manifests


def _leaf_paths(node: object, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [p for key, value in node.items() for p in _leaf_paths(value, f"{prefix}{key}.")]
    return [prefix.rstrip(".")]


def test_every_value_is_documented():
    text = (CHART_DIR / "values.yaml").read_text()
    documented = set(re.findall(r"## @param ([\w.-]+) \S", text))
    paths = _leaf_paths(yaml.safe_load(text))
    undocumented = [
        p for p in paths if not any(p == d or p.startswith(d + ".") for d in documented)
    ]
    assert undocumented == []
    unknown = [d for d in documented if not any(p == d or p.startswith(d + ".") for p in paths)]
    assert unknown == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": "two"}, "at '/replicaCount': got string, want integer"),
        ({"replicaCount": -1}, "at '/replicaCount': minimum: got -1, want 1"),
        (
            {"autoscaling": {"maxReplicas": 0}},
            "at '/autoscaling/maxReplicas': minimum: got 0, want 1",
        ),
        (
            {"autoscaling": {"targetTextsPerSecondPerPod": -2}},
            "/autoscaling/targetTextsPerSecondPerPod",
        ),
        (
            {"probes": {"modelLoadTimeoutSeconds": -5}},
            "at '/probes/modelLoadTimeoutSeconds': minimum",
        ),
        ({"server": {"port": 70000}}, "at '/server/port': maximum: got 70,000, want 65,535"),
        ({"server": {"device": "tpu"}}, "at '/server/device'"),
        ({"image": {"digest": "latest"}}, "at '/image/digest': 'latest' does not match pattern"),
        ({"model": {"source": "configmap"}}, "at '/model/source'"),
        ({"autoscaling": {"minReplica": 2}}, "additional properties 'minReplica' not allowed"),
        ({"resources": {"limits": {"memory": "lots"}}}, "at '/resources/limits/memory'"),
    ],
)
def test_schema_rejects_bad_values(values, message):
    with pytest.raises(ChartError) as error:
        render_chart(values)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"autoscaling": {"minReplicas": 5, "maxReplicas": 3}},
            "autoscaling.minReplicas (5) is greater than autoscaling.maxReplicas (3)",
        ),
        (
            {"autoscaling": {"enabled": False}, "replicaCount": 1, "pdb": {"minAvailable": 1}},
            "pdb.minAvailable (1) must be lower than replicaCount (1): otherwise no pod may ever",
        ),
        (
            {"pdb": {"minAvailable": 2}},
            "pdb.minAvailable (2) must be lower than autoscaling.minReplicas (2)",
        ),
        ({"pdb": {"minAvailable": "100%"}}, "pdb.minAvailable (100%) must be below 100%"),
        ({"pdb": {"maxUnavailable": 0}}, "pdb.maxUnavailable is 0: no pod could ever be evicted"),
        ({"pdb": {"maxUnavailable": "0%"}}, "pdb.maxUnavailable is 0"),
        (
            {"lifecycle": {"terminationGracePeriodSeconds": 30}},
            "lifecycle.terminationGracePeriodSeconds (30) must be longer than",
        ),
        ({"model": {"source": "pvc"}}, "model.pvc.claimName is empty"),
        ({"probes": {"modelLoadTimeoutSeconds": 3}}, "could not cover model loading"),
    ],
)
def test_impossible_combinations_fail_at_render_time(values, message):
    with pytest.raises(ChartError) as error:
        render_chart(values)
    assert message in str(error.value)


def test_a_satisfiable_min_available_pdb_renders():
    pdb = find(render_chart({"pdb": {"minAvailable": 1}}), "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1 and "maxUnavailable" not in pdb["spec"]


def test_optional_kinds_can_be_turned_off():
    manifests = render_chart(
        {
            "networkPolicy": {"enabled": False},
            "pdb": {"enabled": False},
            "serviceAccount": {"create": False},
            "metrics": {"scrapeAnnotations": False},
        }
    )
    kinds = {m["kind"] for m in manifests}
    assert kinds == {"ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Service"}
    assert pod_spec(manifests)["serviceAccountName"] == "default"
    annotations = find(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert set(annotations) == {"checksum/config"}
    assert validate_manifests(manifests) == []


def test_thread_settings_come_from_values():
    values = {"server": {"ompWaitPolicy": "ACTIVE", "intraOpSpinning": True}}
    data = find(render_chart(values), "ConfigMap")["data"]
    assert (data["OMP_WAIT_POLICY"], data["INTRA_OP_SPINNING"]) == ("ACTIVE", "true")
    settings = Settings.from_env(data)
    assert (settings.omp_wait_policy, settings.intra_op_spinning) == ("ACTIVE", True)
    with pytest.raises(ChartError, match="ompWaitPolicy"):
        render_chart({"server": {"ompWaitPolicy": "spin"}})


@pytest.mark.parametrize("value", [1024, None])
def test_slice_tokens_is_no_chart_value_the_round_budget_is(value):
    """Rounds are bounded in time (server.roundBudgetMs, ROUND_BUDGET_MS), not in tokens."""
    with pytest.raises(ChartError) as error:
        render_chart({"server": {"sliceTokens": value}})
    assert "at '/server': additional properties 'sliceTokens' not allowed" in str(error.value)
    with pytest.raises(ChartError, match="roundBudgetMs"):
        render_chart({"server": {"roundBudgetMs": 0}})
    assert "ROUND_BUDGET_MS" not in find(render_chart({}), "ConfigMap")["data"]


@pytest.mark.parametrize("value", ["fixed", "adaptive", None])
def test_the_removed_thread_tuning_value_is_refused(value):
    """server.threadTuning (THREAD_TUNING) was removed: torch always runs server.torchThreads."""
    with pytest.raises(ChartError) as error:
        render_chart({"server": {"threadTuning": value}})
    assert "at '/server': additional properties 'threadTuning' not allowed" in str(error.value)
    assert "THREAD_TUNING" not in find(render_chart({}), "ConfigMap")["data"]
