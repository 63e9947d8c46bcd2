"""The Pulumi program under mocks, per stack file: what it registers, in which order, with which
inputs (the image build, the secrets), and how the CLI and the workflows run it. The service's
release and what Helm renders from it: test_program_release.py; the metrics pipeline:
test_program_monitoring.py."""

from __future__ import annotations

import re
import runpy
from typing import Any

import pulumi
import pytest
import yaml
from program_cases import IMAGE, RELEASE, STACKS, rendered, stack_yaml
from pulumi_harness import (
    REPO,
    TEST_PASSWORD,
    is_secret,
    plain_occurrences,
    prod_secrets,
    run_program,
    start,
)

from infra.chart_render import find
from infra.image import DOCKERFILE, TARGETS
from infra.program import deploy


@pytest.fixture(scope="module", params=sorted(STACKS))
def result(request):
    return request.param, run_program(deploy, request.param, **STACKS[request.param])


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


def _pulumi_commands(workflow: str) -> dict[str, list[tuple[str, str]]]:
    """Per job: (command, stack) of each step that runs pulumi, by pulumi/actions or by the CLI,
    for the command the job runs (reusable workflows expanded with the caller's inputs)."""
    document = yaml.safe_load((REPO / ".github" / "workflows" / workflow).read_text())
    commands: dict[str, list[tuple[str, str]]] = {}
    for job_id, job in document["jobs"].items():
        if "uses" in job:  # a reusable workflow: the steps for the caller's command
            called = yaml.safe_load((REPO / job["uses"]).read_text())
            command = job["with"]["command"]
            steps = [
                step
                for step in next(iter(called["jobs"].values()))["steps"]
                if "inputs.command ==" not in step.get("if", "")
                or f"inputs.command == '{command}'" in step["if"]
            ]
        else:
            steps = job.get("steps", [])
        found = []
        for step in steps:
            given = step.get("with") or {}
            if str(step.get("uses", "")).startswith("pulumi/actions@") and "command" in given:
                found.append((given["command"], given["stack-name"]))
            for match in re.finditer(
                r"pulumi (preview|up) [^|\n]*--stack (\w+)", step.get("run", "")
            ):
                found.append((match.group(1), match.group(2)))
        if found:
            commands[job_id] = found
    return commands


def test_workflows_preview_every_stack_on_prs_and_deploy_dev_before_prod():
    stacks = sorted(path.name.split(".")[1] for path in REPO.glob("Pulumi.*.yaml"))
    preview = _pulumi_commands("pulumi-preview.yml")
    assert preview == {stack: [("preview", stack)] for stack in stacks}
    up = _pulumi_commands("pulumi-up.yml")
    assert up == {stack: [("up", stack)] for stack in stacks}
    document = yaml.safe_load((REPO / ".github" / "workflows" / "pulumi-up.yml").read_text())
    assert document["jobs"]["prod"]["needs"] == "dev"
    assert document["jobs"]["prod"]["environment"]["name"] == "prod"


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
