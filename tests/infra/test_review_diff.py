"""`make diff` end to end on a git repository holding a copy of the project: the base commit and
an edited working tree, each tree's own program computing its values under mocks and Helm's own
engine rendering each tree's chart (nothing of Helm is mocked). Each test makes one change a
reviewer would review and reads the report as the reviewer would."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from infra.review.cli import CHANGES, ERROR, HEAD_BUILT, NO_CHANGES, main

REPO = Path(__file__).resolve().parents[2]
COPIED = ("app", "docker", "infra", ".dockerignore", "Pulumi.yaml", "Pulumi.dev.yaml")
HEADER = re.compile(r"^(\S.*) (has changed:|has been added:|has been removed:)$")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.fixture(scope="module")
def template_repo(tmp_path_factory) -> Path:
    """The project's files (tracked, or new and not ignored) in a fresh repository, one commit."""
    root = tmp_path_factory.mktemp("review") / "project"
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", *COPIED, "Pulumi.prod.yaml"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    for name in listed:
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "base")
    return root


@pytest.fixture
def project(template_repo, tmp_path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(template_repo, root, symlinks=True)
    return root


def diff(project: Path, capsys, stack: str = "prod", *extra: str) -> tuple[int, str, str]:
    code = main(["--stack", stack, "--root", str(project), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def sections(report: str) -> dict[str, list[str]]:
    """{"<key> <message>": [the section's lines]}, in the report's order."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in report.splitlines():
        match = HEADER.match(line)
        if match:
            current = found.setdefault(line, [])
        elif not line.strip():
            current = None
        elif current is not None:
            current.append(line)
    return found


def fields(lines: list[str]) -> list[str]:
    """The field summary of a section (indented `~`, `+`, `-` lines before the YAML diff)."""
    return [line.strip() for line in lines if re.match(r"^  [~+-] \S", line)]


def changed_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if re.match(r"^[+-] ", line)]


def set_path(project: Path, key: str, path: str, value) -> None:
    """`pulumi config set --path uninlu:<key>.<path> <value>`, on the stack file itself."""
    stack_file = project / "Pulumi.prod.yaml"
    document = yaml.safe_load(stack_file.read_text())
    target = document["config"][f"uninlu:{key}"]
    *parents, last = path.split(".")
    for name in parents:
        target = target[name]
    target[last] = value
    stack_file.write_text(yaml.safe_dump(document, sort_keys=False))


def test_no_change_exits_0_with_no_changes(project, capsys):
    (project / "README.md").write_text("outside the image context and the chart\n")
    code, out, _ = diff(project, capsys, "prod", "--base", "main")
    assert code == NO_CHANGES
    assert out.splitlines()[-1] == "no changes"
    assert out.startswith("make diff STACK=prod: main (")


def test_the_default_base_is_the_merge_base_with_main(project, capsys):
    _git(project, "checkout", "-qb", "topic")
    (project / "Pulumi.dev.yaml").write_text(
        (project / "Pulumi.dev.yaml").read_text().replace("maxReplicas: 2", "maxReplicas: 3")
    )
    _git(project, "commit", "-qam", "dev: 3 pods")
    code, out, _ = diff(project, capsys, "dev")
    assert code == CHANGES
    assert "merge base with main" in out.splitlines()[0]
    assert "~ spec.maxReplicas: 2 -> 3" in out


def test_a_template_only_edit_reports_exactly_that_object_and_field(project, capsys):
    """The DNS egress rule loses its ports: the pod may now reach every port of every pod in the
    cluster. The preview shows a fingerprint; this shows the rule."""
    template = project / "infra" / "chart" / "templates" / "networkpolicy.yaml"
    text = template.read_text()
    dns_ports = (
        "      ports:\n        - port: 53\n          protocol: UDP\n"
        "        - port: 53\n          protocol: TCP\n"
    )
    assert dns_ports in text
    template.write_text(text.replace(dns_ports, "", 1))

    code, out, _ = diff(project, capsys, "prod", "--base", "HEAD")

    assert code == CHANGES
    found = sections(out)
    (header,) = found
    assert header == "uninlu, uninlu, NetworkPolicy (networking.k8s.io) has changed:"
    assert fields(found[header]) == [
        '- spec.egress[0].ports: [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]'
    ]
    assert changed_lines(found[header]) == [
        "-     ports:",
        "-     - port: 53",
        "-       protocol: UDP",
        "-     - port: 53",
        "-       protocol: TCP",
    ]
    assert "Plan: 0 to add, 1 to change, 0 to destroy." in out
    # The pods roll (the chart's fingerprint is a pod annotation): said once, not as a change.
    assert "the pods roll" in out and "Deployment" not in out


def test_max_replicas_5_to_12_reports_the_hpa_and_the_capacity_before_and_after(project, capsys):
    set_path(project, "autoscaling", "maxReplicas", 12)

    code, out, _ = diff(project, capsys, "prod", "--base", "HEAD")

    assert code == CHANGES
    found = sections(out)
    (header,) = found
    assert header == "uninlu, uninlu, HorizontalPodAutoscaler (autoscaling) has changed:"
    assert fields(found[header]) == ["~ spec.maxReplicas: 5 -> 12"]
    assert changed_lines(found[header]) == ["-   maxReplicas: 5", "+   maxReplicas: 12"]
    rows = {line[2:36].strip(): line for line in out.splitlines() if line[:2] in ("~ ", "  ")}
    # One onnx pod with 2 CPUs: 8.0 texts/s within p95 <= 1000 ms (infra/capacity/capacity.json).
    expected = {  # label: (changed?, before, after)
        "pods (HPA min to max)": ("~", "2 to 5", "2 to 12"),
        "per-pod texts target": (" ", "5.6 (70 % of 8)", "5.6 (70 % of 8)"),
        "most texts/s within the SLO": ("~", "40 (5 pods x 8)", "96 (12 pods x 8)"),
        "declared peak, texts/s": ("~", "25: 62 % of the most", "25: 26 % of the most"),
    }
    for label, (mark, before, after) in expected.items():
        pattern = rf"\{mark} {re.escape(label)} +{re.escape(before)} +{re.escape(after)}"
        assert re.fullmatch(pattern, rows[label]), rows[label]
    for label in (
        "ramp: worst p95, time over SLO",
        "ramp: scaling starts at",
        "ramp: replica-hours",
    ):
        assert label in rows
    assert "PLAN_ARGS=--reuse" in out
    assert not [line for line in out.splitlines() if line.startswith("! ")]


def test_a_change_under_app_alone_reports_the_image_placeholder_and_nothing_else(project, capsys):
    server = project / "app" / "serving" / "server.py"
    server.write_text(server.read_text() + "\n# a server change\n")
    base = _git(project, "rev-parse", "--short=7", "HEAD").strip()

    code, out, _ = diff(project, capsys, "prod", "--base", "HEAD")

    assert code == CHANGES
    found = sections(out)
    (header,) = found
    assert header == "uninlu, uninlu, Deployment (apps) has changed:"
    image = "ghcr.io/example-org/uninlu@"
    before, after = f"<digest of the image built from the base, {base}>", HEAD_BUILT
    assert fields(found[header]) == [
        f'~ spec.template.spec.containers[0].image: "{image}{before}" -> "{image}{after}"'
    ]
    assert changed_lines(found[header]) == [
        f"-         image: {image}{before}",
        f"+         image: {image}{after}",
    ]
    assert "capacity" not in out and "the pods roll" not in out


def test_without_a_change_to_the_build_both_sides_show_the_same_placeholder(project, capsys):
    (project / "tests").mkdir()
    (project / "tests" / "test_new.py").write_text("# dockerignored: not in the image\n")
    code, out, _ = diff(project, capsys, "prod", "--base", "HEAD")
    assert code == NO_CHANGES, out


def test_the_capacity_problems_a_change_makes_are_one_line_each_at_the_top(project, capsys):
    set_path(project, "autoscaling", "maxReplicas", 2)
    set_path(project, "autoscaling", "targetTextsPerSecondPerPod", 9)

    code, out, _ = diff(project, capsys, "prod", "--base", "HEAD")

    assert code == CHANGES
    lines = out.splitlines()
    assert lines[1] == (
        "! prod: the declared peak 25 texts/s is out of reach within the SLO: 2 pods x 8 "
        "texts/s = 16 texts/s at most"
    )
    assert lines[2].startswith(
        "! prod: the per-pod texts target 9 is above the measured capacity of one onnx pod "
        "with 2 CPUs (8 texts/s within p95 <= 1000 ms)"
    )
    assert lines[3].startswith("Plan: ")


def test_a_promoted_image_shows_the_tag_it_resolves(project, capsys):
    set_path(project, "image", "build", False)
    set_path(project, "image", "tag", "dev-0123abc")
    code, out, _ = diff(project, capsys, "prod", "--base", "HEAD")
    assert code == CHANGES
    promoted = "<digest of ghcr.io/example-org/uninlu:dev-0123abc when deployed>"
    assert f"+         image: ghcr.io/example-org/uninlu@{promoted}" in out


def test_a_new_stack_file_adds_every_object(project, capsys):
    shutil.copy(project / "Pulumi.dev.yaml", project / "Pulumi.staging.yaml")
    code, out, _ = diff(project, capsys, "staging", "--base", "HEAD")
    assert code == CHANGES
    assert "Pulumi.staging.yaml is new in this change: every object is added" in out
    assert all(h.endswith("has been added:") for h in sections(out))
    assert "uninlu, uninlu, Deployment (apps) has been added:" in sections(out)


def test_an_invalid_stack_file_is_an_error_naming_its_key(project, capsys):
    stack_file = project / "Pulumi.prod.yaml"
    stack_file.write_text(stack_file.read_text().replace("maxReplicas: 5", "maxReplica: 5"))
    code, out, err = diff(project, capsys, "prod", "--base", "HEAD")
    assert code == ERROR
    assert out == ""
    assert "invalid stack config in Pulumi.prod.yaml" in err
    assert "uninlu:autoscaling.maxReplica: unknown key" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--stack", "nosuch", "--base", "HEAD"), "no Pulumi.nosuch.yaml: STACK must name a stack"),
        (("--stack", "prod", "--base", "no-such-ref"), "BASE=no-such-ref is not a commit"),
    ],
)
def test_a_wrong_stack_or_base_is_one_clear_error(project, capsys, args, message):
    code = main([*args, "--root", str(project)])
    out, err = capsys.readouterr()
    assert code == ERROR and out == ""
    assert message in err
