"""The chart's two autoscaling engines on real renders (helm-python-sdk) of the default and the
production-like value sets (chart_cases.py): `autoscaling.engine: keda` renders a KEDA ScaledObject,
valid against the ScaledObject CRD of the pinned KEDA (tests/infra/data, crd_schema.py), with the
texts and CPU triggers and no HPA; `hpa` renders the HPA and no ScaledObject; the CPU metric is the
server container's or the pod's; tolerances render as quantities both accept."""

from __future__ import annotations

import copy

import pytest
from chart_cases import NAMESPACE, VALUE_SETS, server_container
from crd_schema import KEDA_SCALEDOBJECT_CRD, load_crd, validate_custom_resource

from infra.chart_render import (
    NEWEST_KUBE_VERSION,
    ChartError,
    find,
    lint_chart,
    render_chart,
    render_files,
    validate_manifests,
)
from infra.monitoring import KEDA_VERSION, deployment_texts_query

CRD = load_crd(KEDA_SCALEDOBJECT_CRD)
SERVER = "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
QUERY = deployment_texts_query(NAMESPACE, "nlu-uninlu")
TOLERANCES = {"scaleUp": {"tolerance": 0.06}, "scaleDown": {"tolerance": 0.04}}


def keda(values: dict, **autoscaling) -> dict:
    """`values` with engine keda and the keda block the program passes."""
    merged = copy.deepcopy(values)
    scaling = merged.setdefault("autoscaling", {})
    scaling |= {"engine": "keda", "keda": {"serverAddress": SERVER, "query": QUERY}, **autoscaling}
    return merged


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def keda_render(request) -> tuple[str, list[dict]]:
    name = request.param
    return name, render_chart(keda(VALUE_SETS[name]), name="nlu", namespace=NAMESPACE)


def test_the_crd_is_the_pinned_keda_versions():
    assert KEDA_SCALEDOBJECT_CRD.name == f"keda-scaledobjects-crd-v{KEDA_VERSION}.yaml"
    header = KEDA_SCALEDOBJECT_CRD.read_text().split("---")[0]
    for fragment in ("kedacore/keda", f"v{KEDA_VERSION}", "Apache License 2.0"):
        assert fragment in header
    assert CRD["metadata"]["name"] == "scaledobjects.keda.sh"


def test_keda_renders_a_valid_scaled_object_and_no_hpa(keda_render):
    name, manifests = keda_render
    assert find(manifests, "HorizontalPodAutoscaler") is None
    scaled_object = find(manifests, "ScaledObject")
    assert validate_custom_resource(scaled_object, CRD) == [], name
    others = [m for m in manifests if m["kind"] != "ScaledObject"]
    assert validate_manifests(others) == [], name
    spec = scaled_object["spec"]
    deployment = find(manifests, "Deployment")
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert "replicas" not in deployment["spec"]  # KEDA's HPA owns the count
    bounds = {"default": (2, 6), "production": (3, 12)}[name]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == bounds
    # Its HPA has the name the hpa engine's HPA has: alerts and dashboards find it either way.
    hpa_name = find(
        render_chart(VALUE_SETS[name], name="nlu", namespace=NAMESPACE), "HorizontalPodAutoscaler"
    )
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["name"] == hpa_name["metadata"]["name"]


def test_both_triggers_carry_the_hpa_engines_targets(keda_render):
    name, manifests = keda_render
    texts, cpu = find(manifests, "ScaledObject")["spec"]["triggers"]
    threshold = {"default": "4", "production": "2.5"}[name]
    assert texts == {
        "type": "prometheus",
        "name": "texts-per-second",
        "metricType": "AverageValue",
        "metadata": {
            "serverAddress": SERVER,
            "query": QUERY,
            "threshold": threshold,
            "ignoreNullValues": "false",  # no series: Prometheus lost the pods, not zero load
        },
    }
    assert cpu == {
        "type": "cpu",
        "name": "cpu",
        "metricType": "Utilization",
        "metadata": {"value": "70", "containerName": server_container(manifests)["name"]},
    }


def test_keda_gets_the_hpa_engines_behaviour_and_a_fallback(keda_render):
    name, manifests = keda_render
    spec = find(manifests, "ScaledObject")["spec"]
    hpa = find(
        render_chart(VALUE_SETS[name], name="nlu", namespace=NAMESPACE), "HorizontalPodAutoscaler"
    )
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == hpa["spec"]["behavior"]
    # Prometheus unreadable 3 times in a row: hold the current count (minReplicas or more).
    assert spec["fallback"] == {
        "failureThreshold": 3,
        "replicas": spec["minReplicaCount"],
        "behavior": "currentReplicasIfHigher",
    }


def test_hpa_renders_the_hpa_and_no_scaled_object():
    for values in VALUE_SETS.values():
        manifests = render_chart(values, name="nlu", namespace=NAMESPACE)
        assert find(manifests, "ScaledObject") is None
        assert find(manifests, "HorizontalPodAutoscaler") is not None
    off = render_chart(keda({}, enabled=False))
    assert find(off, "ScaledObject") is None and find(off, "HorizontalPodAutoscaler") is None


@pytest.mark.parametrize(
    ("cpu_metric", "metric_type"),
    [("ContainerResource", "ContainerResource"), ("Resource", "Resource")],
)
def test_cpu_metric_of_the_server_container_or_of_the_pod(cpu_metric, metric_type):
    hpa = find(render_chart({"autoscaling": {"cpuMetric": cpu_metric}}), "HorizontalPodAutoscaler")
    (cpu,) = [m for m in hpa["spec"]["metrics"] if m["type"] != "Pods"]
    assert cpu["type"] == metric_type
    scaled_object = find(render_chart(keda({}, cpuMetric=cpu_metric)), "ScaledObject")
    (trigger,) = [t for t in scaled_object["spec"]["triggers"] if t["type"] == "cpu"]
    assert ("containerName" in trigger["metadata"]) is (metric_type == "ContainerResource")
    assert validate_custom_resource(scaled_object, CRD) == []


def test_keda_on_cpu_alone_has_no_prometheus_trigger_and_no_fallback():
    """KEDA allows a fallback only beside a trigger that is not cpu or memory
    (apis/keda/v1alpha1/scaledobject_types.go CheckFallbackValid)."""
    values = keda({}, textsPerSecondMetric=False)
    del values["autoscaling"]["keda"]
    scaled_object = find(render_chart(values), "ScaledObject")
    assert [t["type"] for t in scaled_object["spec"]["triggers"]] == ["cpu"]
    assert "fallback" not in scaled_object["spec"]
    assert validate_custom_resource(scaled_object, CRD) == []


def test_tolerances_render_as_quantities_for_both_engines():
    hpa = find(render_chart({"autoscaling": {"behavior": TOLERANCES}}), "HorizontalPodAutoscaler")
    assert hpa["spec"]["behavior"]["scaleUp"]["tolerance"] == "0.06"
    assert hpa["spec"]["behavior"]["scaleDown"]["tolerance"] == "0.04"
    assert validate_manifests([hpa], ["1.35", NEWEST_KUBE_VERSION]) == []
    scaled_object = find(render_chart(keda({}, behavior=TOLERANCES)), "ScaledObject")
    behavior = scaled_object["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior == hpa["spec"]["behavior"]
    assert validate_custom_resource(scaled_object, CRD) == []
    # A bare YAML number would not do: the CRD takes an integer or a quantity string.
    broken = copy.deepcopy(scaled_object)
    broken_behavior = broken["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    broken_behavior["scaleUp"]["tolerance"] = 0.06
    assert any("tolerance" in e for e in validate_custom_resource(broken, CRD))


def test_crd_validation_catches_what_the_api_server_would_refuse_or_drop(keda_render):
    _, manifests = keda_render
    scaled_object = find(manifests, "ScaledObject")
    broken = copy.deepcopy(scaled_object)
    broken["spec"]["pollingIntervall"] = 15
    broken["spec"]["triggers"][0]["metadata"]["threshold"] = 4
    broken["spec"]["minReplicaCount"] = broken["spec"]["maxReplicaCount"] + 1
    errors = validate_custom_resource(broken, CRD)
    assert any(e.startswith("spec.pollingIntervall: unknown field") for e in errors), errors
    assert any("threshold" in e and "string" in e for e in errors), errors
    assert "spec: minReplicaCount must be less than or equal to maxReplicaCount" in errors


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            keda({}, keda={"serverAddress": "", "query": QUERY}),
            "autoscaling.keda.serverAddress is empty",
        ),
        (keda({}, keda={"serverAddress": SERVER, "query": ""}), "autoscaling.keda.query is empty"),
        ({"autoscaling": {"engine": "both"}}, "/autoscaling/engine"),
        ({"autoscaling": {"cpuMetric": "Pods"}}, "/autoscaling/cpuMetric"),
        ({"autoscaling": {"behavior": {"scaleUp": {"tolerance": "ten percent"}}}}, "tolerance"),
    ],
    ids=["no-server", "no-query", "unknown-engine", "unknown-cpu-metric", "bad-tolerance"],
)
def test_impossible_keda_values_are_refused_with_the_key(values, message):
    with pytest.raises(ChartError, match=message):
        render_chart(values)


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_lint_is_clean_with_keda(value_set):
    assert lint_chart(keda(VALUE_SETS[value_set]), NAMESPACE) == []


def test_notes_name_the_engine():
    notes = render_files(keda({}))["uninlu/templates/NOTES.txt"]
    assert "Autoscaling (KEDA)" in notes and "get scaledobject,hpa uninlu" in notes
