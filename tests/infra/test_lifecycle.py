"""The second `pulumi up`: previews and updates of a live stack, run as the engine runs them
(pulumi_harness.Lifecycle), each asserting the exact set of changed inputs a user would review."""

from __future__ import annotations

import shutil
from pathlib import Path

import pulumi
import pytest
import yaml
from pulumi_harness import (
    COMPUTED,
    IMAGE_TYPE,
    RELEASE_TYPE,
    REPO,
    Lifecycle,
    prod_secrets,
)

from infra.chart_render import find, render_chart
from infra.image import pushed_digest
from infra.program import deploy
from infra.service import chart_fingerprint

SECRETS = {"dev": {}, "prod": prod_secrets()}
# What `pulumi up` runs from: the project root. The tests work on a copy, so they can edit it.
PROJECT_FILES = (
    "app",
    "docker",
    "infra/chart",
    ".dockerignore",
    "Pulumi.dev.yaml",
    "Pulumi.prod.yaml",
)


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "project"
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    monkeypatch.chdir(root)
    return root


def deployed(stack: str) -> Lifecycle:
    """A stack after its first `pulumi up` (preview, then the update)."""
    stack_life = Lifecycle(deploy, stack, secrets=SECRETS[stack])
    stack_life.preview()
    stack_life.up()
    return stack_life


def release(outcome, name: str = "uninlu") -> dict:
    return outcome.run.one(RELEASE_TYPE, name).plain_inputs


@pytest.mark.parametrize("stack", sorted(SECRETS))
def test_first_preview_creates_everything_with_the_digest_unknown(project, stack):
    outcome = Lifecycle(deploy, stack, secrets=SECRETS[stack]).preview()
    assert {step.op for step in outcome.steps} == {"create"}
    assert outcome.outputs["imageRef"] == COMPUTED
    assert release(outcome)["values"]["image"]["digest"] == COMPUTED


@pytest.mark.parametrize("stack", sorted(SECRETS))
def test_up_pins_the_pushed_digest(project, stack):
    stack_life = Lifecycle(deploy, stack, secrets=SECRETS[stack])
    outcome = stack_life.up()
    repository, digest = outcome.outputs["imageRef"].split("@")
    assert release(outcome)["values"]["image"] == {"repository": repository, "digest": digest}


@pytest.mark.parametrize("stack", sorted(SECRETS))
def test_second_preview_with_nothing_changed_has_no_changes(project, stack):
    stack_life = deployed(stack)
    assert stack_life.preview().changed() == {}
    assert stack_life.up().changed() == {}


@pytest.mark.parametrize("stack", sorted(SECRETS))
def test_a_change_under_app_previews_as_a_rebuild_with_only_the_digest_unknown(project, stack):
    """Fails on the old program: the preview stopped with `ValueError: the image push returned no
    sha256 digest ... ''` (pulumi-docker-build's empty digest on an update preview)."""
    stack_life = deployed(stack)
    before = stack_life.up().outputs["imageRef"].split("@")[1]
    server = project / "app" / "serving" / "server.py"
    server.write_text(server.read_text() + "\n# a code change\n")

    outcome = stack_life.preview()

    changed = outcome.changed()
    assert set(changed) == {f"update {IMAGE_TYPE} uninlu-image", f"update {RELEASE_TYPE} uninlu"}
    assert list(changed[f"update {IMAGE_TYPE} uninlu-image"]) == ["contextHash"]
    assert changed[f"update {RELEASE_TYPE} uninlu"] == {"values.image.digest": (before, COMPUTED)}
    assert outcome.outputs["imageRef"] == COMPUTED

    applied = stack_life.up()
    after = applied.outputs["imageRef"].split("@")[1]
    assert after != before and after.startswith("sha256:")
    assert applied.changed()[f"update {RELEASE_TYPE} uninlu"] == {
        "values.image.digest": (before, after)
    }
    assert stack_life.preview().changed() == {}


def test_a_file_outside_the_image_context_changes_nothing(project):
    stack_life = deployed("dev")
    (project / "README.md").write_text("docs only\n")  # .dockerignore keeps it out of the context
    assert stack_life.preview().changed() == {}


@pytest.mark.parametrize("stack", sorted(SECRETS))
def test_a_template_only_change_previews_as_the_chart_fingerprint_alone(project, stack):
    """Fails on the old program: the release's inputs (chart, Chart.yaml version, values) do not
    change, so the preview reports no changes and the template never reaches the cluster."""
    stack_life = deployed(stack)
    old_values = release(stack_life.up())["values"]
    template = project / "infra" / "chart" / "templates" / "networkpolicy.yaml"
    template.write_text(template.read_text() + "# a template change\n")

    outcome = stack_life.preview()

    changed = outcome.changed()
    assert list(changed) == [f"update {RELEASE_TYPE} uninlu"]
    old, new = old_values.get("chartFingerprint"), release(outcome)["values"]["chartFingerprint"]
    assert len(new) == 64 and new != old
    assert changed[f"update {RELEASE_TYPE} uninlu"] == {"values.chartFingerprint": (old, new)}
    # ... and that value rolls the pods: it is a pod-template annotation.
    inputs = release(outcome)
    manifests = render_chart(inputs["values"], name=inputs["name"], namespace=inputs["namespace"])
    pod = find(manifests, "Deployment")["spec"]["template"]["metadata"]
    assert pod["annotations"]["checksum/chart"] == new


def test_config_set_path_max_replicas_changes_only_that_value(project):
    """`pulumi config set --path uninlu:autoscaling.maxReplicas 12 --stack prod`."""
    stack_life = deployed("prod")
    prod = yaml.safe_load((REPO / "Pulumi.prod.yaml").read_text())["config"]
    current = prod["uninlu:autoscaling"]["maxReplicas"]
    assert current != 12
    stack_life.config_set_path("autoscaling.maxReplicas", 12)

    outcome = stack_life.preview()

    assert outcome.changed() == {
        f"update {RELEASE_TYPE} uninlu": {"values.autoscaling.maxReplicas": (current, 12)}
    }
    stack_life.up()
    assert stack_life.preview().changed() == {}


def test_declaring_an_older_kubernetes_changes_only_the_cpu_metric(project):
    """`pulumi config set uninlu:kubernetesVersion 1.29 --stack prod`: the HPA's CPU metric goes
    from the server container's (ContainerResource, GA in 1.30) to the pod's, nothing else."""
    stack_life = deployed("prod")
    stack_life.config_set("kubernetesVersion", "1.29")

    outcome = stack_life.preview()

    assert outcome.changed() == {
        f"update {RELEASE_TYPE} uninlu": {
            "values.autoscaling.cpuMetric": ("ContainerResource", "Resource")
        }
    }
    (cpu,) = [
        m
        for m in find(manifests_of(outcome), "HorizontalPodAutoscaler")["spec"]["metrics"]
        if m["type"] != "Pods"
    ]
    prod = yaml.safe_load((REPO / "Pulumi.prod.yaml").read_text())["config"]
    percent = prod["uninlu:autoscaling"]["targetCPUUtilizationPercentage"]
    target = {"type": "Utilization", "averageUtilization": percent}
    assert cpu == {"type": "Resource", "resource": {"name": "cpu", "target": target}}


def manifests_of(outcome) -> list[dict]:
    inputs = release(outcome)
    return render_chart(inputs["values"], name=inputs["name"], namespace=inputs["namespace"])


def test_every_chart_file_changes_the_fingerprint_and_nothing_else_does(project):
    chart = project / "infra" / "chart"
    original = chart_fingerprint(chart)
    files = sorted(p for p in chart.rglob("*") if p.is_file())
    assert len(files) > 10
    for path in files:
        content = path.read_bytes()
        path.write_bytes(content + b"\n")
        assert chart_fingerprint(chart) != original, path
        path.write_bytes(content)
    assert chart_fingerprint(chart) == original
    (chart / "templates" / "extra.yaml").write_text("")  # a new file counts too
    assert chart_fingerprint(chart) != original
    (chart / "templates" / "extra.yaml").unlink()
    for outside in ("app/serving/server.py", "Pulumi.prod.yaml", "docker/Dockerfile"):
        (project / outside).write_text("changed\n")
    (project / "infra" / "notes.txt").write_text("beside the chart, not in it\n")
    assert chart_fingerprint(chart) == original


@pytest.mark.parametrize("digest", ["", "sha256:abc", "latest", None])
def test_outside_a_preview_a_missing_or_malformed_digest_names_the_image(digest):
    with pytest.raises(ValueError, match=r"no sha256 digest for ghcr\.io/example-org/uninlu"):
        pushed_digest("ghcr.io/example-org/uninlu", digest, dry_run=False)


def test_in_a_preview_only_the_empty_digest_is_unknown():
    assert pushed_digest("r/u", "", dry_run=True) is pulumi.UNKNOWN
    good = "sha256:" + "a" * 64
    assert pushed_digest("r/u", good, dry_run=True) == good
    with pytest.raises(ValueError, match="r/u"):
        pushed_digest("r/u", "sha256:short", dry_run=True)
