"""The program under mocks with `autoscaling.engine: keda` on copies of the stack files: the KEDA
release it installs (dev) or expects (prod), the Prometheus Adapter's external metrics off, the
ScaledObject Helm would receive (valid against KEDA's CRD); and, for either engine, the CPU metric
and the tolerances the stack's kubernetesVersion allows."""

from __future__ import annotations

from typing import Any

import pytest
from crd_schema import KEDA_SCALEDOBJECT_CRD, load_crd, validate_custom_resource
from program_cases import RELEASE, STACKS, release_inputs, rendered, stack_yaml
from pulumi_harness import run_program

from infra import monitoring
from infra.chart_render import NEWEST_KUBE_VERSION, find, validate_manifests
from infra.program import deploy

CRD = load_crd(KEDA_SCALEDOBJECT_CRD)
KEDA_RELEASE = "uninlu-monitoring-keda"
ADAPTER_RELEASE = "uninlu-monitoring-adapter"


def changed(stack: str, key: str, **fields: Any) -> dict[str, Any]:
    """The stack file's object `key` with some fields changed."""
    return {key: {**stack_yaml(stack)[key], **fields}}


def keda_overrides(stack: str, **monitoring_fields: Any) -> dict[str, Any]:
    overrides = changed(stack, "autoscaling", engine="keda")
    if monitoring_fields:
        overrides |= changed(stack, "monitoring", **monitoring_fields)
    return overrides


def run(stack: str, overrides: dict[str, Any]):
    return run_program(deploy, stack, overrides=overrides, **STACKS[stack])


@pytest.fixture(scope="module")
def dev_keda():
    return run("dev", keda_overrides("dev", installKeda=True))


@pytest.fixture(scope="module")
def prod_keda():
    return run("prod", keda_overrides("prod"))


def test_dev_installs_the_pinned_keda_chart_before_the_release(dev_keda):
    keda = release_inputs(dev_keda, KEDA_RELEASE)
    assert (keda["chart"], keda["version"]) == ("keda", monitoring.KEDA_VERSION)
    assert keda["repositoryOpts"] == {"repo": "https://kedacore.github.io/charts"}
    assert (keda["name"], keda["namespace"]) == ("keda", "keda")
    assert keda["createNamespace"] is True and keda["atomic"] is True
    # Its CRDs come with it; its metrics server owns v1beta1.external.metrics.k8s.io.
    assert keda["values"]["crds"] == {"install": True}
    assert keda["values"]["metricsServer"] == {"enabled": True}
    service = dev_keda.run.one(RELEASE, "uninlu")
    before = {dev_keda.run.by_urn(urn).name for urn in service.dependencies}
    assert KEDA_RELEASE in before
    assert dev_keda.outputs["autoscaling"]["engine"] == "keda"


def test_dev_with_keda_installs_no_adapter_by_default(dev_keda):
    names = {r.name for r in dev_keda.run.of_type(RELEASE)}
    assert ADAPTER_RELEASE not in names
    assert {"uninlu-monitoring-prometheus", "uninlu-monitoring-metrics-server"} <= names


def test_dev_keda_release_renders_a_valid_scaled_object_on_the_dev_prometheus(dev_keda):
    manifests = rendered(dev_keda)
    assert find(manifests, "HorizontalPodAutoscaler") is None
    scaled_object = find(manifests, "ScaledObject")
    assert validate_custom_resource(scaled_object, CRD) == []
    texts, cpu = scaled_object["spec"]["triggers"]
    scaling = stack_yaml("dev")["autoscaling"]
    assert texts["metadata"]["serverAddress"] == "http://prometheus-server.monitoring.svc:80"
    assert texts["metadata"]["serverAddress"] == dev_keda.outputs["prometheusUrl"]
    assert texts["metadata"]["query"] == monitoring.deployment_texts_query("uninlu", "uninlu")
    assert texts["metadata"]["threshold"] == str(scaling["targetTextsPerSecondPerPod"])
    assert cpu["metadata"] == {
        "value": str(scaling["targetCPUUtilizationPercentage"]),
        "containerName": "server",
    }
    assert validate_manifests([m for m in manifests if m["kind"] != "ScaledObject"]) == []


def test_with_the_adapter_kept_its_external_metrics_stay_off():
    """A stack on KEDA may keep the adapter (installAdapter: true): the adapter then registers
    the custom metrics API only, never a second owner of v1beta1.external.metrics.k8s.io (the
    prometheus-adapter chart renders that APIService only for non-empty rules.external)."""
    res = run("dev", keda_overrides("dev", installKeda=True, installAdapter=True))
    adapter = release_inputs(res, ADAPTER_RELEASE)
    assert adapter["values"]["rules"]["external"] == []
    assert adapter["values"]["rules"]["custom"] == [monitoring.predict_texts_rule()]
    assert release_inputs(res, KEDA_RELEASE)["values"]["metricsServer"]["enabled"] is True


def test_prod_expects_the_clusters_keda(prod_keda):
    names = {r.name for r in prod_keda.run.of_type(RELEASE)}
    assert KEDA_RELEASE not in names
    adapter = release_inputs(prod_keda, ADAPTER_RELEASE)  # kept: installAdapter true in the file
    assert adapter["values"]["rules"]["external"] == []
    scaled_object = find(rendered(prod_keda), "ScaledObject")
    assert validate_custom_resource(scaled_object, CRD) == []
    (texts,) = [t for t in scaled_object["spec"]["triggers"] if t["type"] == "prometheus"]
    config = stack_yaml("prod")["monitoring"]
    assert texts["metadata"]["serverAddress"] == (
        f"{config['prometheusUrl']}:{config['prometheusPort']}"
    )


@pytest.mark.parametrize(
    ("version", "metric"),
    [("1.29", "Resource"), ("1.30", "ContainerResource"), ("1.35", "ContainerResource")],
)
def test_cpu_metric_follows_the_declared_kubernetes_version(version, metric):
    hpa_res = run("prod", {"kubernetesVersion": version})
    assert release_inputs(hpa_res)["values"]["autoscaling"]["cpuMetric"] == metric
    hpa = find(rendered(hpa_res), "HorizontalPodAutoscaler")
    assert {m["type"] for m in hpa["spec"]["metrics"]} == {metric, "Pods"}
    assert validate_manifests([hpa], [version, NEWEST_KUBE_VERSION]) == []
    keda_res = run("prod", {"kubernetesVersion": version, **keda_overrides("prod")})
    scaled_object = find(rendered(keda_res), "ScaledObject")
    (cpu,) = [t for t in scaled_object["spec"]["triggers"] if t["type"] == "cpu"]
    assert ("containerName" in cpu["metadata"]) is (metric == "ContainerResource")


def test_tolerances_reach_both_engines_from_kubernetes_1_35():
    behavior = {"scaleUp": {"tolerance": 0.06}, "scaleDown": {"tolerance": 0.04}}
    overrides = {"kubernetesVersion": "1.35", **changed("prod", "autoscaling", behavior=behavior)}
    res = run("prod", overrides)
    assert release_inputs(res)["values"]["autoscaling"]["behavior"] == behavior
    hpa = find(rendered(res), "HorizontalPodAutoscaler")
    assert hpa["spec"]["behavior"]["scaleUp"]["tolerance"] == "0.06"
    assert hpa["spec"]["behavior"]["scaleDown"]["tolerance"] == "0.04"
    # The chart's own defaults fill the rest of each direction.
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert validate_manifests([hpa], ["1.35", NEWEST_KUBE_VERSION]) == []
    overrides["autoscaling"]["engine"] = "keda"
    scaled_object = find(rendered(run("prod", overrides)), "ScaledObject")
    config = scaled_object["spec"]["advanced"]["horizontalPodAutoscalerConfig"]
    assert config["behavior"] == hpa["spec"]["behavior"]
    assert validate_custom_resource(scaled_object, CRD) == []


def test_without_tolerances_nothing_new_renders():
    hpa = find(rendered(run("prod", {})), "HorizontalPodAutoscaler")
    for direction in ("scaleUp", "scaleDown"):
        assert "tolerance" not in hpa["spec"]["behavior"][direction]
