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
    for job in preview["jobs"].values():  # the comment is posted by pulumi-review-comment.yml
        assert job["permissions"] == {"contents": "read"}
    comment = load("pulumi-review-comment.yml")
    assert comment["permissions"] == {}
    assert comment["jobs"]["comment"]["permissions"] == {
        "actions": "read",  # the preview run's artifact
        "pull-requests": "write",  # the one comment
    }
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
    gate, rest, keep = steps[0], steps[1:-1], steps[-1]
    assert gate["id"] == "secrets"
    assert "::notice title=prod preview skipped::" in gate["run"]
    assert '>> "$GITHUB_STEP_SUMMARY"' in gate["run"]
    # ... and in the review comment: the note is what the prod preview's artifact holds.
    assert 'echo "$note" > "$RUNNER_TEMP/preview/prod.txt"' in gate["run"]
    assert all("steps.secrets.outputs.present == 'true'" in step["if"] for step in rest)
    assert keep["uses"].startswith("actions/upload-artifact@")
    assert keep["with"]["name"] == "preview-prod" and keep["if"] == "${{ !cancelled() }}"


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


# --- the review comment: make diff and the previews, one comment per pull request, updated ----


def test_each_preview_is_kept_for_the_review_comment_not_posted_on_its_own():
    for name, job in (("pulumi-preview.yml", "prod"), ("pulumi-dev.yml", "dev")):
        steps = load(name)["jobs"][job]["steps"]
        assert not [s for s in steps if "comment-on-pr" in (s.get("with") or {})], name
        (preview,) = [s for s in steps if "pulumi preview --diff" in s.get("run", "")]
        assert f'tee "$RUNNER_TEMP/preview/{job}.txt"' in preview["run"]
        assert "--color never" in preview["run"]
        kept = [s for s in steps if (s.get("with") or {}).get("name") == f"preview-{job}"]
        assert kept and kept[0]["with"]["path"] == f"${{{{ runner.temp }}}}/preview/{job}.txt"
    # The prod preview may hold what the job's secrets print: they are taken out of the file.
    steps = load("pulumi-preview.yml")["jobs"]["prod"]["steps"]
    (scrub,) = [s for s in steps if "infra.review.comment scrub" in s.get("run", "")]
    for name in ("PULUMI_CONFIG_PASSPHRASE", "REGISTRY_PASSWORD", "KUBECONFIG_CONTENT"):
        assert f"--env {name}" in scrub["run"]
    names = [s.get("name", s.get("uses", "")) for s in steps]
    assert names.index(scrub["name"]) < len(names) - 1  # before the upload


def test_the_review_job_runs_make_diff_for_every_stack_with_the_repository_alone():
    review = load("pulumi-preview.yml")["jobs"]["review"]
    text = yaml.safe_dump(review)
    assert "secrets." not in text and "vars." not in text  # forks get it too
    assert review["needs"] == ["dev", "prod"] and review["if"] == "${{ !cancelled() }}"
    steps = review["steps"]
    checkout = steps[0]
    assert checkout["uses"].startswith("actions/checkout@")
    assert checkout["with"]["fetch-depth"] == 2  # the merge commit and the base it merges into
    (diff,) = [s for s in steps if "-m infra.review --stack" in s.get("run", "")]
    assert "for stack in dev prod; do" in diff["run"]
    assert '--stack "$stack" --base HEAD^1' in diff["run"]
    assert '> "$RUNNER_TEMP/review/$stack.txt"' in diff["run"]
    assert 'echo "$status" > "$RUNNER_TEMP/review/$stack.rc"' in diff["run"]
    stacks = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in REPO.glob("Pulumi.*.yaml"))
    assert f"for stack in {' '.join(stacks)}; do" in diff["run"]
    (download,) = [s for s in steps if s.get("uses", "").startswith("actions/download-artifact@")]
    assert download["with"]["pattern"] == "preview-*"
    (build,) = [s for s in steps if "infra.review.comment build" in s.get("run", "")]
    assert f"--stacks {','.join(stacks)}" in build["run"]
    assert '> "$RUNNER_TEMP/comment/pr-number"' in build["run"]
    assert build["env"]["PR_NUMBER"] == "${{ github.event.pull_request.number }}"
    (upload,) = [s for s in steps if (s.get("with") or {}).get("name") == "review-comment"]
    assert "comment/comment.md" in upload["with"]["path"]
    assert "comment/pr-number" in upload["with"]["path"]
    assert steps.index(diff) < steps.index(build) < steps.index(upload)
    # An error (exit 1) fails the check after the comment is kept; a change (2) does not.
    assert "= 1 ]" in steps[-1]["run"] and steps.index(upload) < len(steps) - 1


def test_the_comment_is_posted_from_the_default_branch_and_updated_in_place():
    preview_name = load("pulumi-preview.yml")["name"]
    workflow = load("pulumi-review-comment.yml")
    assert workflow["on"] == {"workflow_run": {"workflows": [preview_name], "types": ["completed"]}}
    job = workflow["jobs"]["comment"]
    assert "github.event.workflow_run.event == 'pull_request'" in job["if"]
    steps = job["steps"]
    checkout = steps[0]
    # The default branch's code: never the pull request's (no ref to its head).
    assert checkout["uses"].startswith("actions/checkout@") and "ref" not in checkout["with"]
    assert checkout["with"]["persist-credentials"] is False
    download = steps[1]
    assert download["uses"].startswith("actions/download-artifact@")
    assert download["with"]["name"] == "review-comment"
    assert download["with"]["run-id"] == "${{ github.event.workflow_run.id }}"
    post = steps[2]
    assert post["run"].startswith("python3 -m infra.review.comment post")
    assert '--head-sha "$HEAD_SHA"' in post["run"]
    assert post["env"]["HEAD_SHA"] == "${{ github.event.workflow_run.head_sha }}"
    assert post["env"]["GITHUB_TOKEN"] == "${{ github.token }}"
    # Every ${{ }} in a script is the run's own, never the pull request's text.
    for step in steps:
        assert "${{" not in step.get("run", "")


def test_the_posting_script_needs_nothing_but_the_standard_library():
    """The comment job runs it with the runner's python3, without installing anything."""
    source = (REPO / "infra" / "review" / "comment.py").read_text()
    imported = set(re.findall(r"^(?:from|import) (\w+)", source, flags=re.MULTILINE))
    assert imported <= {"__future__", "argparse", "json", "os", "re", "sys", "urllib",
                        "collections", "dataclasses", "pathlib", "typing"}  # fmt: skip
    assert (REPO / "infra" / "review" / "__init__.py").read_text().count("import") == 0
