"""Switching a live stack's autoscaling engine (`autoscaling.engine` hpa <-> keda): the `pulumi up`
under the lifecycle harness (pulumi_harness.Lifecycle), and what Helm, KEDA and the garbage
collector then do with the chart's objects, replayed on the model of keda_model.py. The chart
never renders an HPA and a ScaledObject together; the Deployment never has two autoscalers."""

from __future__ import annotations

import copy

import pytest
from keda_model import (
    EXCLUDED_LABELS,
    TRANSFER,
    HelmError,
    KedaRefused,
    autoscalers,
    delete,
    helm_upgrade,
    keda_hpa,
    keda_webhook,
)
from pulumi_harness import RELEASE_TYPE
from test_lifecycle import deployed, project, release  # noqa: F401 (project: a fixture)

from infra.chart_render import find, render_chart
from infra.monitoring import KEDA_CHART, KEDA_VERSION, deployment_texts_query

RELEASE_NAME = NAMESPACE = HPA = "uninlu"
HPA_KEY = ("HorizontalPodAutoscaler", HPA)
SO_KEY = ("ScaledObject", HPA)


def manifests(outcome) -> list[dict]:
    inputs = release(outcome)
    return render_chart(inputs["values"], name=inputs["name"], namespace=inputs["namespace"])


def installed(objects: list[dict]) -> dict:
    cluster: dict = {}
    helm_upgrade(cluster, [], objects, RELEASE_NAME, NAMESPACE)
    return cluster


def never_two_autoscalers(trace: list[str]) -> bool:
    counts = [line for line in trace if line.startswith("  autoscalers:")]
    return bool(counts) and all("', '" not in line for line in counts)


def to_keda(stack_life) -> tuple[list[dict], list[dict]]:
    """`pulumi config set --path uninlu:autoscaling.engine keda`, then `pulumi up`: the renders of
    the release before and after."""
    before = manifests(stack_life.up())
    stack_life.config_set_path("autoscaling.engine", "keda")
    after = manifests(stack_life.up())
    return before, after


def test_prod_hpa_to_keda_previews_as_the_engine_and_its_keda_values(project):  # noqa: F811
    stack_life = deployed("prod")
    stack_life.config_set_path("autoscaling.engine", "keda")

    outcome = stack_life.preview()

    # prod expects the cluster's KEDA (installKeda false): the release is the only change.
    assert outcome.changed() == {
        f"update {RELEASE_TYPE} uninlu": {
            "values.autoscaling.engine": ("hpa", "keda"),
            "values.autoscaling.keda.serverAddress": (
                None,
                "http://kube-prometheus-stack-prometheus.monitoring.svc:9090",
            ),
            "values.autoscaling.keda.query": (None, deployment_texts_query(NAMESPACE, "uninlu")),
            "values.autoscaling.keda.fallbackReplicas": (None, 2),  # minReplicas: hold
        }
    }
    stack_life.up()
    assert stack_life.preview().changed() == {}


def test_prod_hpa_to_keda_in_one_up_hands_the_hpa_over(project):  # noqa: F811
    before, after = to_keda(deployed("prod"))
    assert find(before, "ScaledObject") is None and find(before, "HorizontalPodAutoscaler")
    assert find(after, "HorizontalPodAutoscaler") is None and find(after, "ScaledObject")
    cluster = installed(before)
    chart_hpa = copy.deepcopy(cluster[HPA_KEY])

    trace: list[str] = []
    helm_upgrade(cluster, before, after, RELEASE_NAME, NAMESPACE, trace)

    # KEDA's webhook admitted the ScaledObject while the chart's HPA still existed (Helm creates
    # before it deletes), because it takes that HPA over by name; Helm then deleted the HPA
    # object and KEDA wrote it again: for a moment no autoscaler, never two.
    assert trace[0] == f"create {SO_KEY}"
    assert never_two_autoscalers(trace), trace
    assert "  autoscalers: {}" in trace
    assert autoscalers(cluster) == {"uninlu": [HPA]}
    hpa = cluster[HPA_KEY]
    assert hpa["metadata"]["ownerReferences"][0]["name"] == "uninlu"
    # The same autoscaler as before: bounds, behaviour, the server's CPU; the texts per pod now
    # an External metric (KEDA's total / the pods) with the same AverageValue target.
    assert hpa["spec"]["scaleTargetRef"] == chart_hpa["spec"]["scaleTargetRef"]
    for field in ("minReplicas", "maxReplicas", "behavior"):
        assert hpa["spec"][field] == chart_hpa["spec"][field], field
    old = {m["type"]: m for m in chart_hpa["spec"]["metrics"]}
    new = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert new.keys() == {"ContainerResource", "External"}
    assert new["ContainerResource"] == old["ContainerResource"]
    assert new["External"]["external"]["target"] == old["Pods"]["pods"]["target"]


def test_without_the_transfer_annotation_keda_would_refuse_the_switch(project):  # noqa: F811
    before, after = to_keda(deployed("prod"))
    cluster = installed(before)
    scaled_object = find(after, "ScaledObject")
    keda_webhook(scaled_object, cluster)  # as rendered: admitted
    del scaled_object["metadata"]["annotations"][TRANSFER]
    with pytest.raises(KedaRefused, match="is already managed by the hpa 'uninlu'"):
        keda_webhook(scaled_object, cluster)


def test_keda_to_hpa_in_one_up_is_refused_before_anything_changes(project):  # noqa: F811
    stack_life = deployed("prod")
    hpa_render, keda_render = to_keda(stack_life)
    cluster = installed(hpa_render)
    helm_upgrade(cluster, hpa_render, keda_render, RELEASE_NAME, NAMESPACE)
    stack_life.config_set_path("autoscaling.engine", "hpa")
    outcome = stack_life.preview()
    changes = outcome.changed()[f"update {RELEASE_TYPE} uninlu"]
    assert changes["values.autoscaling.engine"] == ("keda", "hpa")
    back = manifests(stack_life.up())
    assert find(back, "ScaledObject") is None

    before = copy.deepcopy(cluster)
    with pytest.raises(HelmError) as refused:
        helm_upgrade(cluster, keda_render, back, RELEASE_NAME, NAMESPACE)
    # KEDA's HPA keeps KEDA's managed-by label (the ScaledObject excludes Helm's), so Helm will
    # not adopt it: the upgrade stops, the ScaledObject keeps scaling.
    assert (
        'HorizontalPodAutoscaler "uninlu" in namespace "uninlu" exists and cannot be imported '
        "into the current release" in str(refused.value)
    )
    assert '"app.kubernetes.io/managed-by" must equal "Helm": current value is "keda-operator"' in (
        str(refused.value)
    )
    assert cluster == before


def test_keda_to_hpa_after_deleting_the_scaled_object_gives_the_chart_its_hpa(project):  # noqa: F811
    """The documented order: `kubectl delete scaledobject uninlu --cascade=foreground` (its HPA
    goes with it), then `pulumi up` with engine hpa."""
    stack_life = deployed("prod")
    hpa_render, keda_render = to_keda(stack_life)
    cluster = installed(hpa_render)
    helm_upgrade(cluster, hpa_render, keda_render, RELEASE_NAME, NAMESPACE)
    stack_life.config_set_path("autoscaling.engine", "hpa")
    back = manifests(stack_life.up())

    delete(cluster, SO_KEY)
    assert autoscalers(cluster) == {}  # the pods keep their count meanwhile
    trace: list[str] = []
    helm_upgrade(cluster, keda_render, back, RELEASE_NAME, NAMESPACE, trace)

    assert never_two_autoscalers(trace)
    assert autoscalers(cluster) == {"uninlu": [HPA]}
    hpa = cluster[HPA_KEY]
    assert "ownerReferences" not in hpa["metadata"]
    assert hpa["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert hpa["spec"] == find(back, "HorizontalPodAutoscaler")["spec"]


def test_without_the_excluded_label_keda_to_hpa_would_end_without_an_autoscaler(project):  # noqa: F811
    """Why the ScaledObject excludes Helm's managed-by label from its HPA: otherwise Helm adopts
    KEDA's HPA, the ScaledObject's deletion garbage-collects it, and the upgrade "succeeds"."""
    stack_life = deployed("prod")
    hpa_render, keda_render = to_keda(stack_life)
    for manifest in keda_render:
        manifest["metadata"].get("annotations", {}).pop(EXCLUDED_LABELS, None)
    cluster = installed(hpa_render)
    helm_upgrade(cluster, hpa_render, keda_render, RELEASE_NAME, NAMESPACE)
    assert keda_hpa(cluster[SO_KEY])["metadata"]["labels"]["app.kubernetes.io/managed-by"] == (
        "Helm"
    )
    stack_life.config_set_path("autoscaling.engine", "hpa")
    back = manifests(stack_life.up())

    helm_upgrade(cluster, keda_render, back, RELEASE_NAME, NAMESPACE)

    assert autoscalers(cluster) == {}


def test_dev_switch_installs_keda_before_the_release_and_drops_the_adapter(project):  # noqa: F811
    stack_life = deployed("dev")
    stack_life.config_set_path("autoscaling.engine", "keda")
    stack_life.config_set_path("monitoring.installKeda", True)

    outcome = stack_life.preview()

    changed = outcome.changed()
    assert list(changed) == [
        f"create {RELEASE_TYPE} uninlu-monitoring-keda",
        f"update {RELEASE_TYPE} uninlu",
        # installAdapter defaults to the engine: with keda nothing reads the adapter's metric.
        f"delete {RELEASE_TYPE} uninlu-monitoring-adapter",
    ]
    keda = outcome.run.one(RELEASE_TYPE, "uninlu-monitoring-keda").plain_inputs
    assert (keda["chart"], keda["version"], keda["namespace"]) == (KEDA_CHART, KEDA_VERSION, "keda")
    values = changed[f"update {RELEASE_TYPE} uninlu"]
    assert values["values.autoscaling.engine"] == ("hpa", "keda")
    assert values["values.autoscaling.keda.serverAddress"] == (
        None,
        "http://prometheus-server.monitoring.svc:80",
    )
    stack_life.up()
    assert stack_life.preview().changed() == {}
