"""The GitHub workflows, read as data: pinned actions, least permissions, previews that never
create a stack or fail for want of secrets, and job timeouts that cover the Helm waits they
trigger (a job killed mid-upgrade leaves the release `pending-upgrade`)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from pulumi_harness import RELEASE_TYPE, REPO, prod_secrets, run_program

from infra.program import deploy

WORKFLOWS = REPO / ".github" / "workflows"

# pulumi-kubernetes helm_release.go: defaultTimeoutSeconds, for a Release that sets none.
HELM_DEFAULT_TIMEOUT = 300
# Checkout, venv, kind or buildx, image build with the model download, the Pulumi engine.
SETUP_MINUTES = 20


def load(name: str) -> dict[str, Any]:
    document = yaml.safe_load((WORKFLOWS / name).read_text())
    document["on"] = document.pop(True, document.get("on"))  # YAML 1.1 reads `on:` as True
    return document


def all_steps(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (job_id, step) for job_id, job in document["jobs"].items() for step in job.get("steps", [])
    ]


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.yml")))
def test_every_action_is_pinned_by_commit_sha(name):
    text = (WORKFLOWS / name).read_text()
    uses = re.findall(r"uses:\s*(\S+)(.*)", text)
    assert uses
    for target, comment in uses:
        if target.startswith("./"):
            continue  # a workflow of this repository
        action, _, ref = target.partition("@")
        assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{action} is not pinned by a commit: {ref}"
        assert re.fullmatch(r"\s*# v\d+\.\d+\.\d+", comment), f"{action}: say which version"


def test_permissions_are_the_least_each_job_needs():
    preview = load("pulumi-preview.yml")
    assert preview["permissions"] == {}
    for job in preview["jobs"].values():  # the PR comment needs pull-requests: write
        assert job["permissions"] == {"contents": "read", "pull-requests": "write"}
    up = load("pulumi-up.yml")
    assert up["permissions"] == {"contents": "read"}
    assert all("permissions" not in job for job in up["jobs"].values())
    # The reusable dev workflow asks for nothing: it gets what its caller grants.
    dev = load("pulumi-dev.yml")
    assert "permissions" not in dev and "permissions" not in dev["jobs"]["dev"]


def test_a_preview_never_creates_a_stack_outside_its_own_run():
    preview_scripts = [step.get("run", "") for _, step in all_steps(load("pulumi-preview.yml"))]
    preview_scripts += [step.get("run", "") for _, step in all_steps(load("pulumi-dev.yml"))]
    assert not [s for s in preview_scripts if "--create" in s]
    prod_select = [s for s in preview_scripts if "pulumi stack select" in s]
    assert prod_select and all("pulumi stack select prod\n" in s for s in prod_select)
    (init,) = [s for s in preview_scripts if "stack init" in s]
    # dev's stack is initialised only in a state backend under this run's temp directory.
    assert 'pulumi login "file://$RUNNER_TEMP/pulumi-state"' in init
    assert "PULUMI_BACKEND_URL=file://$RUNNER_TEMP/pulumi-state" in init
    up_scripts = [step.get("run", "") for _, step in all_steps(load("pulumi-up.yml"))]
    assert not [s for s in up_scripts if "--create" in s or "stack init" in s]


def test_the_prod_preview_without_secrets_is_skipped_with_a_visible_note():
    steps = load("pulumi-preview.yml")["jobs"]["prod"]["steps"]
    gate, rest = steps[0], steps[1:]
    assert gate["id"] == "secrets"
    assert "::notice title=prod preview skipped::" in gate["run"]
    assert '>> "$GITHUB_STEP_SUMMARY"' in gate["run"]
    assert all(step["if"] == "steps.secrets.outputs.present == 'true'" for step in rest)


def _helm_wait_seconds(stack: str) -> int:
    """Helm waits of one `pulumi up`, summed (as if every release waited in turn)."""
    res = run_program(deploy, stack, **({"secrets": prod_secrets()} if stack == "prod" else {}))
    return sum(
        int(release.plain_inputs.get("timeout", HELM_DEFAULT_TIMEOUT))
        for release in res.run.of_type(RELEASE_TYPE)
    )


@pytest.mark.parametrize(
    ("stack", "workflow", "job", "after_up_minutes"),
    [
        ("dev", "pulumi-dev.yml", "dev", 10),  # then `rollout status --timeout=600s`
        ("prod", "pulumi-up.yml", "prod", 0),
    ],
)
def test_each_up_jobs_timeout_covers_the_helm_waits_it_triggers(
    stack, workflow, job, after_up_minutes
):
    minutes = load(workflow)["jobs"][job]["timeout-minutes"]
    needed = _helm_wait_seconds(stack) / 60 + SETUP_MINUTES + after_up_minutes
    assert minutes >= needed, f"{workflow} {job}: {minutes} min < {needed:.0f} min"


def test_promotion_pushes_what_dev_checked_and_prod_releases_that_tag():
    up = load("pulumi-up.yml")
    dev_call = up["jobs"]["dev"]
    assert (
        "dev-{0}" in dev_call["with"]["promote-tag"]
        and "github.sha" in dev_call["with"]["promote-tag"]
    )
    promote = next(
        s for s in up["jobs"]["prod"]["steps"] if s.get("if") == "vars.PROMOTE_DEV_IMAGE == 'true'"
    )
    assert "uninlu:image.build false" in promote["run"]
    assert 'uninlu:image.tag "dev-$GITHUB_SHA"' in promote["run"]
    push = load("pulumi-dev.yml")["jobs"]["dev"]["steps"][-1]
    assert push["if"] == "inputs.command == 'up' && inputs.promote-tag != ''"
    assert "pulumi stack output imageRef --stack dev" in push["run"]
    assert "--password-stdin" in push["run"]
