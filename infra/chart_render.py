"""Render and check the uninlu Helm chart offline, without a helm binary or a cluster.

Used by the chart tests and by the Pulumi program's tests: Pulumi hands the chart to Helm as a
release, which under mocks renders nothing, so whoever computes the values renders them here to see
exactly what Kubernetes would receive.

    manifests = render_chart({"autoscaling": {"maxReplicas": 4}})
    assert validate_manifests(manifests) == []
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import yaml

CHART_DIR = Path(__file__).resolve().parent / "chart"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schema bundled.
OLDEST_KUBE_VERSION = "1.29"
NEWEST_KUBE_VERSION = kubernetes_validate.utils.latest_version()
# Kinds that come from CRDs: kubernetes-validate has no schema for them (check them by content).
# The ScaledObject (engine keda) is checked against KEDA's CRD by tests/infra/crd_schema.py.
CRD_KINDS = frozenset({"ServiceMonitor", "PrometheusRule", "ScaledObject"})

ChartError = helm_python.HelmError  # schema violations and template `fail` messages


def render_files(
    values: Mapping[str, Any] | None = None,
    name: str = "uninlu",
    namespace: str = "uninlu",
) -> dict[str, str]:
    """The rendered text per template path (NOTES.txt included), as `helm template` would print.

    Raises ChartError (HelmValuesError for schema violations, HelmRenderError for impossible
    combinations) with the message the user would see.
    """
    with helm_python.Chart.load(CHART_DIR) as chart:
        return chart.render(dict(values or {}), name=name, namespace=namespace)


def render_chart(
    values: Mapping[str, Any] | None = None,
    name: str = "uninlu",
    namespace: str = "uninlu",
) -> list[dict]:
    """The Kubernetes objects the chart produces for `values` (merged over values.yaml)."""
    manifests: list[dict] = []
    for path, text in sorted(render_files(values, name, namespace).items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return manifests


def find(manifests: Iterable[dict], kind: str, name: str | None = None) -> dict | None:
    """The single object of `kind` (named `name` if given), or None if the chart rendered none."""
    found = [
        m
        for m in manifests
        if m.get("kind") == kind and name in (None, m.get("metadata", {}).get("name"))
    ]
    if len(found) > 1:
        raise ValueError(f"expected at most one {kind}, got {len(found)}")
    return found[0] if found else None


def validate_manifests(
    manifests: Iterable[dict],
    kube_versions: Iterable[str] = (OLDEST_KUBE_VERSION, NEWEST_KUBE_VERSION),
) -> list[str]:
    """Strict-mode schema errors of every non-CRD object for each Kubernetes version ([] = valid).

    Strict mode rejects unknown fields, which the lenient mode would let through silently.
    """
    errors = []
    for manifest in manifests:
        if manifest["kind"] in CRD_KINDS:
            continue
        for version in kube_versions:
            where = f"{manifest['kind']}/{manifest['metadata']['name']} (Kubernetes {version})"
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(part) for part in exc.path)
                errors.append(f"{where}: {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                errors.append(f"{where}: {exc.message}")
    return errors


def lint_chart(
    values: Mapping[str, Any] | None = None,
    namespace: str = "uninlu",
    kube_version: str = NEWEST_KUBE_VERSION,
) -> list[str]:
    """`helm lint --strict` findings at warning level or above, as 'path: message' ([] = clean)."""
    report = helm_python.lint(
        CHART_DIR,
        dict(values or {}),
        strict=True,
        namespace=namespace,
        kube_version=f"v{kube_version}.0" if kube_version.count(".") == 1 else kube_version,
    )
    findings = [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
    return findings + list(report.get("errors") or [])


def write_rule_file(manifests: Iterable[dict], path: Path) -> Path:
    """The PrometheusRule's spec.groups as a Prometheus rule file (what promtool and a plain
    Prometheus read), byte for byte the groups the Prometheus Operator would load."""
    rule = find(manifests, "PrometheusRule")
    if rule is None:
        raise ValueError("the chart rendered no PrometheusRule: set metrics.prometheusRule.enabled")
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def write_manifests(manifests: Iterable[dict], directory: Path) -> list[Path]:
    """One YAML file per object under `directory` (for file-based scanners such as checkov)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, manifest in enumerate(manifests):
        path = directory / f"{index:02d}-{manifest['kind'].lower()}.yaml"
        path.write_text(yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True))
        paths.append(path)
    return paths
