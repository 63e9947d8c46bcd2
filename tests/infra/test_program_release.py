"""The service's Helm release as the Pulumi program registers it per stack file, and, through the
real Helm engine, what Kubernetes would receive: values from the stack file, the shutdown budget
within the grace period, the HPA, a one-field edit that changes one field, fixed replicas."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from program_cases import IMAGE, STACKS, release_inputs, rendered, stack_yaml
from pulumi_harness import REPO, run_program

from app.contract import shutdown
from app.contract.metrics import PREDICT_TEXTS_METRIC
from app.serving.settings import Settings
from infra.chart_render import find, validate_manifests
from infra.program import deploy


@pytest.fixture(scope="module", params=sorted(STACKS))
def result(request):
    return request.param, run_program(deploy, request.param, **STACKS[request.param])


def test_service_release_values_come_from_the_stack_file(result):
    stack, res = result
    config = stack_yaml(stack)
    release = release_inputs(res)
    assert release["chart"] == "./infra/chart"
    assert release["namespace"] == config["namespace"]
    assert release["atomic"] is True
    # Pods roll in waves of 25 % (at most 4, fewer with fewer pods): Helm waits for each wave's
    # pull and model load in turn, and one wave may take the Deployment's progress deadline.
    per_pod = config["probes"]["modelLoadTimeoutSeconds"] + 180
    waves = min(config["autoscaling"]["maxReplicas"], 4)
    assert release["timeout"] == waves * per_pod
    assert release["values"]["progressDeadlineSeconds"] == per_pod
    assert release["values"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": 0}
    values = release["values"]
    scaling = config["autoscaling"]
    assert values["autoscaling"] == {
        "enabled": True,
        "engine": "hpa",
        "cpuMetric": "ContainerResource",  # kubernetesVersion unset: 1.30, where it is GA
        "minReplicas": scaling["minReplicas"],
        "maxReplicas": scaling["maxReplicas"],
        "targetCPUUtilizationPercentage": scaling["targetCPUUtilizationPercentage"],
        "textsPerSecondMetric": True,
        "targetTextsPerSecondPerPod": scaling["targetTextsPerSecondPerPod"],
    }
    assert values["pdb"]["enabled"] is config["pdb"]["enabled"]
    assert values["resources"] == config["resources"]
    assert values["server"] == {"gracefulShutdownSeconds": 30, **config["server"]}
    assert values["probes"] == config["probes"]
    assert values["metrics"]["serviceMonitor"]["enabled"] is (stack == "prod")
    rule = values["metrics"]["prometheusRule"]
    assert rule["enabled"] is (stack == "prod")
    assert values["metrics"]["grafanaDashboard"] == {"enabled": stack == "prod"}
    if stack == "prod":
        alerts = config["monitoring"]["alerts"]
        assert rule == {
            "enabled": True,
            "labels": config["monitoring"]["prometheusRuleLabels"],
            "latencySloSeconds": 1.0,  # capacity.sloP95Ms unset: the default 1000 ms
            "errorRatio": 0.01,
            "overloadRatio": 0.05,
            "restartsPerHour": 3,
            "runbookUrl": alerts["runbookUrl"],
        }
    repository, digest = res.outputs["imageRef"].split("@")
    assert values["image"] == {"repository": repository, "digest": digest}
    expected_pull = [{"name": "uninlu-registry"}] if stack == "prod" else []
    assert values["imagePullSecrets"] == expected_pull


def test_shutdown_budget_fits_the_grace_period_the_program_deploys(result):
    """server.gracefulShutdownSeconds -> the server's split (drain delay, in-flight requests,
    batcher close: what the pod reads from its ConfigMap) + the preStop sleep, against the
    terminationGracePeriodSeconds the program's release renders."""
    _, res = result
    manifests = rendered(res)
    settings = Settings.from_env(find(manifests, "ConfigMap", name="uninlu")["data"])
    budget = settings.shutdown_budget
    pod = find(manifests, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    sleep = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert budget.drain_delay + budget.http_graceful + budget.batcher_close == 30
    assert (
        sleep + budget.total + shutdown.EXIT_MARGIN_SECONDS == pod["terminationGracePeriodSeconds"]
    )
    assert release_inputs(res)["values"]["lifecycle"]["terminationGracePeriodSeconds"] == 40


def _quantity(value: float) -> str:
    """How the chart writes a decimal target: whole numbers plain, others in milli-units."""
    return str(int(value)) if float(value).is_integer() else f"{round(value * 1000)}m"


def test_chart_renders_valid_manifests_with_the_stack_hpa(result):
    """Bridge: the values the program hands to Helm, rendered by the real Helm engine."""
    stack, res = result
    manifests = rendered(res)
    assert validate_manifests(manifests) == []
    scaling = stack_yaml(stack)["autoscaling"]
    hpa = find(manifests, "HorizontalPodAutoscaler")
    assert hpa is not None
    assert hpa["spec"]["minReplicas"] == scaling["minReplicas"]
    assert hpa["spec"]["maxReplicas"] == scaling["maxReplicas"]
    metrics = {metric["type"]: metric for metric in hpa["spec"]["metrics"]}
    assert metrics.keys() == {"ContainerResource", "Pods"}
    assert metrics["ContainerResource"]["containerResource"] == {
        "name": "cpu",
        "container": "server",
        "target": {
            "type": "Utilization",
            "averageUtilization": scaling["targetCPUUtilizationPercentage"],
        },
    }
    pods = metrics["Pods"]["pods"]
    assert pods["metric"]["name"] == PREDICT_TEXTS_METRIC
    assert pods["target"] == {
        "type": "AverageValue",
        "averageValue": _quantity(scaling["targetTextsPerSecondPerPod"]),
    }
    deployment = find(manifests, "Deployment")
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == res.outputs["imageRef"]
    service = find(manifests, "Service")
    assert service["metadata"]["name"] == res.outputs["serviceName"]
    assert service["metadata"]["namespace"] == res.outputs["namespace"]
    port = stack_yaml(stack)["service"]["port"]
    assert res.outputs["serviceUrl"] == (
        f"http://{service['metadata']['name']}.{res.outputs['namespace']}.svc.cluster.local:{port}"
    )
    assert service["spec"]["ports"][0]["port"] == port
    assert (find(manifests, "PodDisruptionBudget") is not None) is (stack == "prod")
    assert res.outputs["autoscaling"] == {"enabled": True, "engine": "hpa", **scaling}


def _flatten(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {
            k: v for key, item in value.items() for k, v in _flatten(item, f"{path}.{key}").items()
        }
    if isinstance(value, list):
        return {
            k: v
            for index, item in enumerate(value)
            for k, v in _flatten(item, f"{path}[{index}]").items()
        }
    return {path: value}


def _manifest_map(manifests: list[dict]) -> dict[str, Any]:
    return {f"{m['kind']}/{m['metadata']['name']}": m for m in manifests}


def test_editing_max_replicas_changes_only_that_field(tmp_path):
    """A PR's `maxReplicas: N -> 12` in Pulumi.prod.yaml changes that field and nothing else."""
    original = (REPO / "Pulumi.prod.yaml").read_text()
    current = yaml.safe_load(original)["config"]["uninlu:autoscaling"]["maxReplicas"]
    assert current != 12 and original.count(f"maxReplicas: {current}\n") == 1
    edited = tmp_path / "Pulumi.prod.yaml"
    edited.write_text(original.replace(f"maxReplicas: {current}\n", "maxReplicas: 12\n"))

    before = run_program(deploy, "prod", **STACKS["prod"])
    after = run_program(deploy, "prod", stack_file=edited, **STACKS["prod"])

    old, new = _manifest_map(rendered(before)), _manifest_map(rendered(after))
    assert old.keys() == new.keys()
    changes = {}
    for key in old:
        flat_old, flat_new = _flatten(old[key]), _flatten(new[key])
        for path in flat_old.keys() | flat_new.keys():
            if flat_old.get(path) != flat_new.get(path):
                changes[f"{key}{path}"] = (flat_old.get(path), flat_new.get(path))
    assert changes == {"HorizontalPodAutoscaler/uninlu.spec.maxReplicas": (current, 12)}
    # No rebuild: the image inputs (and so the digest) are the same.
    assert before.run.one(IMAGE).inputs == after.run.one(IMAGE).inputs
    assert after.outputs["autoscaling"]["maxReplicas"] == 12


def test_fixed_replicas_without_autoscaling():
    res = run_program(deploy, "dev", overrides={"autoscaling": {"enabled": False}, "replicas": 1})
    values = release_inputs(res)["values"]
    assert values["replicaCount"] == 1 and values["autoscaling"]["enabled"] is False
    manifests = rendered(res)
    assert find(manifests, "HorizontalPodAutoscaler") is None
    assert find(manifests, "Deployment")["spec"]["replicas"] == 1
    assert res.outputs["autoscaling"] == {"enabled": False, "replicas": 1}
