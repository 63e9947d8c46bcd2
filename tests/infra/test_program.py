"""The Pulumi program under mocks, per stack file: what it registers, in which order, with which
inputs; and, through the real Helm engine, what Kubernetes would receive."""

from __future__ import annotations

import re
import runpy
from pathlib import Path
from typing import Any

import promql_parser
import pulumi
import pytest
import yaml
from pulumi_harness import (
    REPO,
    TEST_PASSWORD,
    is_secret,
    plain_occurrences,
    prod_secrets,
    run_program,
    start,
)

from app.contract import shutdown
from app.contract.metrics import PREDICT_ROUTES, PREDICT_TEXTS_METRIC, PREDICT_TEXTS_TOTAL
from app.serving.settings import Settings
from infra import monitoring
from infra.chart_render import find, render_chart, validate_manifests
from infra.image import DOCKERFILE, TARGETS
from infra.program import deploy

RELEASE = "kubernetes:helm.sh/v3:Release"
IMAGE = "docker-build:index:Image"
STACKS = {"dev": {}, "prod": {"secrets": prod_secrets()}}


def stack_yaml(stack: str, path: Path | None = None) -> dict[str, Any]:
    """The stack file as written (the tests compare against it, not against the program)."""
    document = yaml.safe_load((path or REPO / f"Pulumi.{stack}.yaml").read_text())
    return {key.removeprefix("uninlu:"): value for key, value in document["config"].items()}


@pytest.fixture(scope="module", params=sorted(STACKS))
def result(request):
    return request.param, run_program(deploy, request.param, **STACKS[request.param])


def release_inputs(res, name: str = "uninlu") -> dict[str, Any]:
    return res.run.one(RELEASE, name).plain_inputs


def rendered(res) -> list[dict]:
    inputs = release_inputs(res)
    return render_chart(inputs["values"], name=inputs["name"], namespace=inputs["namespace"])


def test_registers_components_and_their_children(result):
    stack, res = result
    names = sorted((r.type, r.name) for r in res.run.resources)
    expected = [
        ("docker-build:index:Image", "uninlu-image"),
        ("kubernetes:core/v1:Namespace", "uninlu-namespace"),
        (RELEASE, "uninlu"),
        (RELEASE, "uninlu-monitoring-adapter"),
        ("uninlu:infra:InferenceImage", "uninlu-image"),
        ("uninlu:infra:ModelService", "uninlu"),
        ("uninlu:infra:Monitoring", "uninlu-monitoring"),
    ]
    if stack == "dev":
        expected += [
            (RELEASE, "uninlu-monitoring-metrics-server"),
            (RELEASE, "uninlu-monitoring-prometheus"),
        ]
    else:
        expected += [("kubernetes:core/v1:Secret", "uninlu-registry")]
    assert names == sorted(expected)
    components = {r.name: r.urn for r in res.run.resources if r.type.startswith("uninlu:infra:")}
    for child in res.run.resources:
        if not child.type.startswith("uninlu:infra:"):
            assert child.parent in components.values(), f"{child.name} has no component parent"


def test_image_build_args_and_push_settings(result):
    stack, res = result
    config = stack_yaml(stack)
    image = res.run.one(IMAGE).plain_inputs
    name = f"{config['image']['registry']}/{config['image']['repository']}"
    assert image["context"] == {"location": "."}
    assert image["dockerfile"] == {"location": "docker/Dockerfile"}
    runtime = config["image"].get("runtime", "onnx")
    assert image["buildArgs"] == {
        "MODELSCOPE_MODEL_ID": config["model"]["id"],
        "MODELSCOPE_REVISION": config["model"]["revision"],
        "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu",
        **({} if runtime == "torch" else {"ONNX_BACKEND": runtime}),
    }
    # The lean ONNX image unless the stack asks for torch (GPU nodes).
    assert image["target"] == ("runtime" if runtime == "torch" else "runtime-onnx")
    assert image["push"] is True
    assert image["tags"] == [f"{name}:{config['image']['tag']}"]
    assert image["platforms"] == ["linux/amd64"]
    assert image["buildOnPreview"] is False
    if stack == "dev":  # the host-network builder `make kind-up` creates
        assert image["builder"] == {"name": "uninlu-kind"}
    else:
        assert "builder" not in image
    if config["image"]["cache"]:
        assert image["cacheFrom"] == [{"registry": {"ref": f"{name}:buildcache"}}]
        assert image["cacheTo"][0]["registry"]["ref"] == f"{name}:buildcache"
        assert image["cacheTo"][0]["registry"]["mode"] == "max"
    else:
        assert "cacheFrom" not in image and "cacheTo" not in image
    if stack == "prod":
        assert image["registries"] == [
            {"address": "ghcr.io", "username": "uninlu-ci", "password": TEST_PASSWORD}
        ]
    else:
        assert "registries" not in image  # the local registry needs no login
    digest_ref = res.outputs["imageRef"]
    assert digest_ref.startswith(f"{name}@sha256:") and len(digest_ref.split("@sha256:")[1]) == 64


def test_image_targets_and_args_exist_in_the_dockerfile():
    dockerfile = (REPO / DOCKERFILE).read_text()
    stages = set(re.findall(r"^FROM \S+ AS (\S+)", dockerfile, re.MULTILINE))
    assert set(TARGETS.values()) <= stages
    assert re.search(r"^ARG ONNX_BACKEND=", dockerfile, re.MULTILINE)


def test_adapter_chart_version_and_rule(result):
    stack, res = result
    config = stack_yaml(stack)["monitoring"]
    adapter = release_inputs(res, "uninlu-monitoring-adapter")
    assert adapter["chart"] == "prometheus-adapter"
    assert adapter["version"] == monitoring.ADAPTER_VERSION
    assert adapter["repositoryOpts"] == {
        "repo": "https://prometheus-community.github.io/helm-charts"
    }
    assert adapter["namespace"] == config["namespace"]
    values = adapter["values"]
    if stack == "dev":
        assert values["prometheus"]["url"] == "http://prometheus-server.monitoring.svc"
        assert values["prometheus"]["port"] == 80
        prometheus = release_inputs(res, "uninlu-monitoring-prometheus")
        assert (prometheus["chart"], prometheus["name"]) == ("prometheus", "prometheus")
        assert prometheus["version"] == monitoring.PROMETHEUS_VERSION
        assert prometheus["values"]["server"]["persistentVolume"] == {"enabled": False}
    else:
        assert values["prometheus"]["url"] == config["prometheusUrl"]
        assert values["prometheus"]["port"] == config["prometheusPort"]
    assert values["rules"]["default"] is False
    (rule,) = values["rules"]["custom"]
    assert rule["name"] == {"matches": f"^{PREDICT_TEXTS_TOTAL}$", "as": PREDICT_TEXTS_METRIC}
    route_matcher = 'route=~"' + "|".join(PREDICT_ROUTES) + '"'
    assert rule["seriesQuery"].startswith(PREDICT_TEXTS_TOTAL + "{")
    assert route_matcher in rule["seriesQuery"]
    # The query the HPA's numbers come from must filter the routes too, and be a per-pod rate.
    assert rule["metricsQuery"] == (
        f"sum(rate(<<.Series>>{{<<.LabelMatchers>>,{route_matcher}}}[2m])) by (<<.GroupBy>>)"
    )
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}


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


def test_dependency_order(result):
    stack, res = result
    run = res.run
    service = run.one(RELEASE, "uninlu")
    before_service = {run.by_urn(urn).name for urn in service.dependencies}
    assert {"uninlu-monitoring-adapter", "uninlu-namespace", "uninlu-image"} <= before_service
    if stack == "dev":
        adapter = run.one(RELEASE, "uninlu-monitoring-adapter")
        assert [run.by_urn(urn).name for urn in adapter.dependencies] == [
            "uninlu-monitoring-prometheus"
        ]
        assert "uninlu-monitoring-metrics-server" in before_service
    else:
        assert "uninlu-registry" in before_service


def test_registry_password_is_only_ever_a_secret():
    res = run_program(deploy, "prod", **STACKS["prod"])
    leaks = {
        f"{r.type} {r.name}": hits
        for r in res.run.resources
        if (hits := plain_occurrences(r.inputs, TEST_PASSWORD))
    }
    assert leaks == {}
    assert TEST_PASSWORD not in repr(res.outputs)
    image = res.run.one(IMAGE)
    assert is_secret(image.inputs["registries"])
    pull_secret = res.run.one("kubernetes:core/v1:Secret", "uninlu-registry")
    assert pull_secret.inputs["type"] == "kubernetes.io/dockerconfigjson"
    assert is_secret(pull_secret.inputs["stringData"])  # wrapped whole, as it holds a secret
    assert TEST_PASSWORD in pull_secret.plain_inputs["stringData"][".dockerconfigjson"]
    # The chart values stay readable in a preview diff: nothing in them is secret.
    values = res.run.one(RELEASE, "uninlu").inputs["values"]
    assert not is_secret(values) and plain_occurrences(values, "sha256:")


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
    assert metrics.keys() == {"Resource", "Pods"}
    assert metrics["Resource"]["resource"]["target"] == {
        "type": "Utilization",
        "averageUtilization": scaling["targetCPUUtilizationPercentage"],
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
    assert res.outputs["autoscaling"] == {"enabled": True, **scaling}


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


def test_local_model_directory_is_a_named_build_context(tmp_path, monkeypatch):
    model_dir = tmp_path / "uninlu-model"
    model_dir.mkdir()
    res = run_program(
        deploy,
        "dev",
        overrides={"model": {"source": "local", "path": str(model_dir)}},
    )
    image = res.run.one(IMAGE).plain_inputs
    assert image["context"] == {"location": ".", "named": {"model": {"location": str(model_dir)}}}
    assert image["buildArgs"] == {
        "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu",
        "ONNX_BACKEND": "onnx",
    }


def test_torch_runtime_for_gpu_nodes():
    res = run_program(
        deploy,
        "prod",
        secrets=prod_secrets(),
        overrides={
            "image": {**stack_yaml("prod")["image"], "runtime": "torch"},
            "server": {**stack_yaml("prod")["server"], "device": "cuda"},
        },
    )
    image = res.run.one(IMAGE).plain_inputs
    assert image["target"] == "runtime"
    assert "ONNX_BACKEND" not in image["buildArgs"]
    assert find(rendered(res), "ConfigMap", name="uninlu")["data"]["DEVICE"] == "cuda"


def test_fixed_replicas_without_autoscaling():
    res = run_program(deploy, "dev", overrides={"autoscaling": {"enabled": False}, "replicas": 1})
    values = release_inputs(res)["values"]
    assert values["replicaCount"] == 1 and values["autoscaling"]["enabled"] is False
    manifests = rendered(res)
    assert find(manifests, "HorizontalPodAutoscaler") is None
    assert find(manifests, "Deployment")["spec"]["replicas"] == 1
    assert res.outputs["autoscaling"] == {"enabled": False, "replicas": 1}


def test_main_module_exports_the_outputs(monkeypatch):
    """__main__.py, as the Pulumi CLI runs it, under mocks."""
    exported: dict[str, Any] = {}
    monkeypatch.setattr(pulumi, "export", lambda key, value: exported.setdefault(key, value))

    @pulumi.runtime.test
    def _run():
        start("dev")
        runpy.run_path(str(REPO / "__main__.py"), run_name="__main__")
        return pulumi.Output.all(**exported)

    _run()
    assert set(exported) == {
        "namespace",
        "serviceName",
        "serviceUrl",
        "imageRef",
        "prometheusUrl",
        "autoscaling",
    }


def test_project_file_runs_the_program_with_the_repo_virtualenv():
    project = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    assert project["name"] == "uninlu"
    assert project["runtime"] == {
        "name": "python",
        "options": {"toolchain": "pip", "virtualenv": ".venv"},
    }


def _pulumi_steps(workflow: str) -> dict[str, list[dict]]:
    """Per job: the pulumi/actions steps that run a command (reusable workflows expanded)."""
    document = yaml.safe_load((REPO / ".github" / "workflows" / workflow).read_text())
    steps: dict[str, list[dict]] = {}
    for job_id, job in document["jobs"].items():
        if "uses" in job:  # a reusable workflow: its steps, with the caller's inputs
            called = yaml.safe_load((REPO / job["uses"]).read_text())
            inner = next(iter(called["jobs"].values()))
            command = job["with"]["command"]
            found = [dict(step, command=command) for step in inner["steps"]]
        else:
            found = [
                dict(step, command=step.get("with", {}).get("command")) for step in job["steps"]
            ]
        steps[job_id] = [
            step
            for step in found
            if str(step.get("uses", "")).startswith("pulumi/actions@") and "with" in step
        ]
    return steps


def test_workflows_preview_every_stack_on_prs_and_deploy_dev_before_prod():
    stacks = sorted(path.name.split(".")[1] for path in REPO.glob("Pulumi.*.yaml"))
    preview = _pulumi_steps("pulumi-preview.yml")
    assert sorted(preview) == stacks
    for stack, (step,) in preview.items():
        assert step["command"] == "preview"
        assert step["with"]["stack-name"] == stack
        assert step["with"]["comment-on-pr"] in (True, "${{ github.event_name == 'pull_request' }}")
    up = _pulumi_steps("pulumi-up.yml")
    assert sorted(up) == stacks
    for stack, (step,) in up.items():
        assert step["command"] == "up" and step["with"]["stack-name"] == stack
    document = yaml.safe_load((REPO / ".github" / "workflows" / "pulumi-up.yml").read_text())
    assert document["jobs"]["prod"]["needs"] == "dev"
    assert document["jobs"]["prod"]["environment"]["name"] == "prod"


def test_adapter_rule_is_valid_promql_for_the_predict_routes_only():
    """The queries the adapter runs, parsed by a real PromQL parser (a typo here would only show
    up in a live cluster, as an HPA stuck at <unknown>)."""
    rule = monitoring.predict_texts_rule()
    # What the adapter substitutes when the HPA asks for the metric of two pods.
    query = (
        rule["metricsQuery"]
        .replace("<<.Series>>", PREDICT_TEXTS_TOTAL)
        .replace("<<.LabelMatchers>>", 'namespace="uninlu",pod=~"uninlu-a|uninlu-b"')
        .replace("<<.GroupBy>>", "pod")
    )
    parsed = promql_parser.parse(query)
    assert isinstance(parsed, promql_parser.AggregateExpr)
    assert str(parsed.op) == "sum" and parsed.modifier.labels == ["pod"]
    assert parsed.expr.func.name == "rate"
    (window,) = parsed.expr.args
    assert window.range.total_seconds() == 120
    selector = window.vector_selector
    assert selector.name == PREDICT_TEXTS_TOTAL
    matchers = {m.name: (m.op, m.value) for m in selector.matchers.matchers}
    assert matchers["namespace"] == (promql_parser.MatchOp.Equal, "uninlu")
    op, route_regex = matchers["route"]
    assert op == promql_parser.MatchOp.Re
    # PromQL anchors regex matchers: exactly the predict routes, nothing else.
    for route in PREDICT_ROUTES:
        assert re.fullmatch(route_regex, route)
    for other in ("/health", "/ready", "/metrics", "/predict/other", "/"):
        assert not re.fullmatch(route_regex, other)

    series = promql_parser.parse(rule["seriesQuery"])
    assert isinstance(series, promql_parser.VectorSelector) and series.name == PREDICT_TEXTS_TOTAL
    series_matchers = {m.name: (m.op, m.value) for m in series.matchers.matchers}
    assert series_matchers["route"] == (promql_parser.MatchOp.Re, route_regex)
    assert series_matchers["pod"] == (promql_parser.MatchOp.NotEqual, "")


def test_texts_metric_and_its_stack_key_are_pinned_everywhere():
    """The HPA's metric name and its target key must agree across the app, the adapter rule, the
    chart, the stack files and the docs; the request-counting names they replaced are gone."""
    rule = monitoring.predict_texts_rule()
    assert rule["name"]["as"] == PREDICT_TEXTS_METRIC
    assert PREDICT_TEXTS_TOTAL in rule["seriesQuery"]
    hpa_template = (REPO / "infra" / "chart" / "templates" / "hpa.yaml").read_text()
    assert f"name: {PREDICT_TEXTS_METRIC}\n" in hpa_template
    assert "$a.targetTextsPerSecondPerPod" in hpa_template
    chart_values = yaml.safe_load((REPO / "infra" / "chart" / "values.yaml").read_text())
    assert chart_values["autoscaling"]["targetTextsPerSecondPerPod"] > 0
    for stack in STACKS:
        assert stack_yaml(stack)["autoscaling"]["targetTextsPerSecondPerPod"] > 0
    docs = [REPO / "README.md", REPO / "docs" / "stack-config.md"]
    for doc in docs:
        text = doc.read_text()
        assert PREDICT_TEXTS_METRIC in text, doc
        assert "targetTextsPerSecondPerPod" in text, doc
    old_names = ("uninlu_predict_requests_per_second", "requestsPerSecondMetric")
    places = [
        *docs,
        REPO / "Pulumi.dev.yaml",
        REPO / "Pulumi.prod.yaml",
        *sorted((REPO / "infra").rglob("*.py")),
        *sorted((REPO / "infra" / "chart").rglob("*.yaml")),
        *sorted((REPO / "infra" / "chart").rglob("*.json")),
        *sorted((REPO / "infra" / "chart").rglob("*.txt")),
    ]
    for path in places:
        text = path.read_text()
        assert not [name for name in old_names if name in text], path


def test_namespace_pins_the_pod_security_standard_to_the_oldest_supported_kubernetes(result):
    _, res = result
    labels = res.run.one("kubernetes:core/v1:Namespace").plain_inputs["metadata"]["labels"]
    chart = yaml.safe_load((REPO / "infra/chart/Chart.yaml").read_text())
    oldest = re.match(r">=\s*(\d+\.\d+)", chart["kubeVersion"]).group(1)
    assert labels == {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": f"v{oldest}",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/warn-version": f"v{oldest}",
    }


def test_prod_adapter_queries_the_prometheus_clusterip_service_not_the_headless_one():
    url = stack_yaml("prod")["monitoring"]["prometheusUrl"]
    # kube-prometheus-stack names it <fullname>-prometheus (templates/prometheus/service.yaml).
    assert url == "http://kube-prometheus-stack-prometheus.monitoring.svc"
    assert "prometheus-operated" not in url
