"""`make diff STACK=<stack> [BASE=<git ref>]`: what a change does to the cluster, before it gets
there. The chart rendered with the Helm values the program computes for the stack, once from the
base tree and once from the working tree, compared object by object as the helm-diff plugin
prints it, with the capacity consequence when autoscaling, resources, capacity, the runtime or
the server's limits change.

    python -m infra.review --stack prod [--base origin/main] [--context 3]

Each tree's own program computes its values (infra/review/probe.py, run with that tree as the
working directory, under Pulumi's mocks); Helm's own engine (helm-python-sdk) renders that tree's
chart. Exit status: 0 no changes, 2 changes (helm-diff's --detailed-exitcode), 1 an error.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python
import yaml

from infra.review import capacity, manifests
from infra.review.buildcontext import context_hash

PROBE = Path(__file__).resolve().with_name("probe.py")
CHANGES, NO_CHANGES, ERROR = 2, 0, 1
HEAD_BUILT = "<digest of the image built from this commit>"
FINGERPRINT_SENTINEL = "c" * 64
FINGERPRINT_PLACEHOLDER = "<sha256 of the chart's files>"
# Inputs of a build that do not change what is built (where it is pushed, cached, by whom).
NOT_CONTENT = {"tags", "cacheFrom", "cacheTo", "push", "builder", "buildOnPreview", "exports"}
PROBE_TIMEOUT_S = 600


class DiffError(Exception):
    """A clear, one-message failure: exit status 1."""


@dataclass
class Tree:
    root: Path
    label: str  # "working tree", "main (deb0a7e)"


@dataclass
class Rendered:
    """One tree's side: the program's answer and the chart objects it yields."""

    tree: Tree
    probe: dict[str, Any]
    objects: dict[manifests.Key, dict] = field(default_factory=dict)
    fingerprint: str | None = None
    release: dict[str, Any] | None = None  # the local chart's release
    others: dict[str, dict[str, Any]] = field(default_factory=dict)  # other Helm releases

    @property
    def missing(self) -> bool:
        return bool(self.probe.get("missing"))


# --- the base tree --------------------------------------------------------------------------


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DiffError(f"git {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout.strip()


def resolve_base(root: Path, base: str | None) -> tuple[str, str]:
    """(commit, label) of BASE, or of the merge base of HEAD with main (or origin/main)."""
    if base:
        try:
            sha = git(root, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}")
        except DiffError:
            raise DiffError(f"BASE={base} is not a commit of this repository") from None
        return sha, (sha[:7] if sha.startswith(base) else f"{base} ({sha[:7]})")
    for ref in ("main", "origin/main"):
        try:
            sha = git(root, "merge-base", "HEAD", ref)
        except DiffError:
            continue
        return sha, f"merge base with {ref} ({sha[:7]})"
    raise DiffError("no main branch to take the merge base with: pass BASE=<git ref>")


def extract(root: Path, commit: str, dest: Path) -> None:
    """The committed tree of `commit` into `dest` (git archive: no worktree to clean up)."""
    done = subprocess.run(
        ["git", "archive", "--format=tar", commit], cwd=root, capture_output=True, check=False
    )
    if done.returncode != 0:
        raise DiffError(f"git archive {commit}: {done.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
        archive.extractall(dest, filter="data")


# --- each tree's values -----------------------------------------------------------------------


def run_probe(tree: Tree, stack: str) -> dict[str, Any]:
    """The tree's own program under mocks (probe.py), with that tree as the working directory."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PULUMI_CONFIG", "PULUMI_CONFIG_SECRET_KEYS")
    }
    try:
        done = subprocess.run(
            [sys.executable, str(PROBE), "--stack", stack],
            cwd=tree.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DiffError(f"{tree.label}: the program took over {PROBE_TIMEOUT_S} s") from None
    lines = done.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise DiffError(f"{tree.label}: the program failed:\n{tail}") from None
    if "error" in result:
        raise DiffError(f"{tree.label}: {result['error']}")
    return result


def _image_content(probe: dict[str, Any], root: Path) -> Any:
    """What decides the bytes of the image this tree builds (None when it promotes one)."""
    image = probe.get("image")
    if not image or not image.get("build"):
        return None
    inputs = image["inputs"]
    context = inputs.get("context") or {}
    named = {key: value["location"] for key, value in (context.get("named") or {}).items()}
    dockerfile = (inputs.get("dockerfile") or {}).get("location", "Dockerfile")
    content = {key: value for key, value in inputs.items() if key not in NOT_CONTENT}
    content["contextHash"] = context_hash(root, context.get("location", "."), dockerfile, named)
    return content


def placeholders(base: Rendered, head: Rendered, base_commit: str) -> tuple[dict, dict]:
    """The digest sentinels of each side, replaced by what a reader can tell apart: the same
    placeholder on both sides when the build would make the same image, else the commit each
    image comes from; a promoted tag's digest as that tag's, when deployed."""

    def promoted(probe: dict[str, Any]) -> dict[str, str]:
        image = probe.get("image") or {}
        sentinel = probe.get("sentinels", {}).get("promoted")
        if image.get("build") is False and sentinel:
            return {sentinel: f"<digest of {image['ref']} when deployed>"}
        return {}

    head_map = promoted(head.probe)
    base_map = promoted(base.probe)
    if head.probe.get("sentinels"):
        head_map[head.probe["sentinels"]["built"]] = HEAD_BUILT
    if base.probe.get("sentinels"):
        same = _image_content(base.probe, base.tree.root) == _image_content(
            head.probe, head.tree.root
        )
        built = (
            HEAD_BUILT if same else f"<digest of the image built from the base, {base_commit[:7]}>"
        )
        base_map[base.probe["sentinels"]["built"]] = built
    for mapping in (head_map, base_map):
        mapping[FINGERPRINT_SENTINEL] = FINGERPRINT_PLACEHOLDER
    return base_map, head_map


def _is_local_chart(root: Path, chart: str | None) -> bool:
    return bool(chart) and (root / str(chart) / "Chart.yaml").is_file()


def render(side: Rendered) -> None:
    """The tree's chart rendered by Helm with the tree's values (digest and fingerprint as
    sentinels, which the report replaces)."""
    if side.missing:
        return
    for release in side.probe["releases"]:
        if not _is_local_chart(side.tree.root, release["chart"]):
            side.others[release["resource"]] = release
            continue
        if side.release is not None:
            raise DiffError(f"{side.tree.label}: more than one release of a local chart")
        side.release = release
        values = json.loads(json.dumps(release["values"]))
        if "chartFingerprint" in values:
            side.fingerprint = values["chartFingerprint"]
            values["chartFingerprint"] = FINGERPRINT_SENTINEL
        chart_dir = side.tree.root / release["chart"]
        namespace = release.get("namespace") or "default"
        try:
            with helm_python.Chart.load(chart_dir) as chart:
                files = chart.render(values, name=release["name"], namespace=namespace)
        except helm_python.HelmError as err:
            raise DiffError(f"{side.tree.label}: the chart does not render: {err}") from None
        documents = [
            doc
            for path, text in sorted(files.items())
            if path.endswith((".yaml", ".yml"))
            for doc in yaml.safe_load_all(text)
            if doc
        ]
        try:
            side.objects = manifests.index(documents, namespace)
        except ValueError as err:
            raise DiffError(f"{side.tree.label}: {err}") from None


# --- the report ---------------------------------------------------------------------------------


def _release_settings(release: dict[str, Any] | None) -> dict[str, Any] | None:
    if release is None:
        return None
    settings = {key: release.get(key) for key in ("name", "namespace", "version", "values")}
    return settings | (release.get("inputs") or {})


def release_sections(base: Rendered, head: Rendered) -> list[str]:
    """Changes of what is not a rendered object: the local release's own settings (name,
    namespace, version), and the values of the other Helm releases, whose charts are fetched
    from their repositories at deploy time (values only, field by field)."""
    sections = []
    pairs: list[tuple[str, Any, Any]] = []
    if base.release or head.release:
        old, new = _release_settings(base.release), _release_settings(head.release)
        if old is not None and new is not None:
            old.pop("values"), new.pop("values")
            pairs.append((f"release {(head.release or {}).get('name')} (Helm settings)", old, new))
    for name in sorted(base.others.keys() | head.others.keys()):
        old, new = base.others.get(name), head.others.get(name)
        release = new or old
        assert release is not None
        title = f"release {release['name']} (chart {release['chart']} {release.get('version')})"
        pairs.append((title, _release_settings(old), _release_settings(new)))
    for title, old, new in pairs:
        if old == new:
            continue
        if old is None:
            body = [f"  + {line}" for line in manifests.to_yaml(new).splitlines()]
            sections.append("\n".join([f"{title} has been added:", *body]))
        elif new is None:
            body = [f"  - {line}" for line in manifests.to_yaml(old).splitlines()]
            sections.append("\n".join([f"{title} has been removed:", *body]))
        else:
            fields = manifests.field_changes(old, new)
            sections.append("\n".join([f"{title} has changed:", *(f"  {f}" for f in fields)]))
    return sections


def _capacity(stack: str, base: Rendered, head: Rendered) -> capacity.Consequence | None:
    def side(rendered: Rendered) -> capacity.Side:
        root = rendered.tree.root
        return capacity.Side(
            settings=None if rendered.missing else rendered.probe["settings"],
            capacity_file=root / "infra" / "capacity" / "capacity.json",
            chart_values=root / "infra" / "chart" / "values.yaml",
        )

    return capacity.consequence(stack, side(base), side(head))


def report(stack: str, base: Rendered, head: Rendered, base_commit: str, context: int):
    """(text, changed)"""
    base_map, head_map = placeholders(base, head, base_commit)
    base_label = base.tree.label
    old = {k: manifests.substitute(v, base_map) for k, v in base.objects.items()}
    new = {k: manifests.substitute(v, head_map) for k, v in head.objects.items()}
    entries = manifests.compare(old, new, context)
    releases = release_sections(base, head)
    consequence = _capacity(stack, base, head)

    lines = [f"make diff STACK={stack}: {base_label} -> {head.tree.label}"]
    if consequence:
        lines += consequence.problems
    if base.missing:
        lines.append(f"Pulumi.{stack}.yaml is new in this change: every object is added")
    if not entries and not releases and not consequence:
        return "\n".join([*lines, "no changes"]), False
    counts = {change: sum(e.change == change for e in entries) for change in manifests.MESSAGES}
    lines.append(
        f"Plan: {counts['ADD']} to add, {counts['MODIFY']} to change, "
        f"{counts['REMOVE']} to destroy."
    )
    if base.fingerprint and head.fingerprint and base.fingerprint != head.fingerprint:
        lines.append(
            f"note: the chart's files changed (chartFingerprint {base.fingerprint[:8]}… -> "
            f"{head.fingerprint[:8]}…), so the pod annotation checksum/chart changes and the "
            f"pods roll; the objects show it as {FINGERPRINT_PLACEHOLDER}"
        )
    blocks = [entry.render() for entry in entries] + releases
    if consequence:
        blocks.append(consequence.section)
    return "\n".join(lines) + "\n\n" + "\n\n".join(blocks), True


def diff(root: Path, stack: str, base_ref: str | None, context: int) -> tuple[str, bool]:
    if not (root / f"Pulumi.{stack}.yaml").is_file():
        stacks = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in root.glob("Pulumi.*.yaml"))
        raise DiffError(
            f"no Pulumi.{stack}.yaml: STACK must name a stack file ({', '.join(stacks)})"
        )
    commit, label = resolve_base(root, base_ref)
    with tempfile.TemporaryDirectory(prefix="uninlu-diff-") as tmp:
        base_root = Path(tmp) / "base"
        base_root.mkdir()
        extract(root, commit, base_root)
        trees = [Tree(base_root, label), Tree(root, "working tree")]
        with ThreadPoolExecutor(max_workers=2) as pool:
            probes = list(pool.map(lambda tree: run_probe(tree, stack), trees))
        base, head = (Rendered(tree, probe) for tree, probe in zip(trees, probes, strict=True))
        for side in (base, head):
            render(side)
        return report(stack, base, head, commit, context)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.review", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--stack", required=True, help="the stack file Pulumi.<stack>.yaml")
    parser.add_argument("--base", default=None, help="git ref (default: merge base with main)")
    parser.add_argument("--context", type=int, default=manifests.CONTEXT_LINES)
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the working tree")
    args = parser.parse_args(argv)
    try:
        text, changed = diff(args.root.resolve(), args.stack, args.base, args.context)
    except DiffError as err:
        print(f"make diff: error: {err}", file=sys.stderr)
        return ERROR
    print(text)
    return CHANGES if changed else NO_CHANGES
