"""The Helm chart, rendered by the real Helm engine (helm-python-sdk) for two value sets: the
defaults and a production-like GPU set (chart_cases.py). Each set is linted, validated against the
Kubernetes schemas in strict mode and scanned by checkov once; test_chart_content.py checks what the
service depends on, test_chart_values.py the documentation of the values and their refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from chart_cases import NAMESPACE, VALUE_SETS

from infra.chart_render import (
    NEWEST_KUBE_VERSION,
    OLDEST_KUBE_VERSION,
    find,
    lint_chart,
    render_chart,
    validate_manifests,
    write_manifests,
)


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request) -> tuple[str, list[dict]]:
    name = request.param
    return name, render_chart(VALUE_SETS[name], name="nlu", namespace=NAMESPACE)


@pytest.mark.parametrize("kube_version", [OLDEST_KUBE_VERSION, NEWEST_KUBE_VERSION])
@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_lint_is_clean(value_set, kube_version):
    assert lint_chart(VALUE_SETS[value_set], NAMESPACE, kube_version) == []


def test_lint_reports_bad_values():
    findings = lint_chart({"replicaCount": "three"}, NAMESPACE)
    assert any("/replicaCount" in f and "want integer" in f for f in findings), findings


def test_manifests_pass_strict_kubernetes_schemas(rendered):
    name, manifests = rendered
    assert validate_manifests(manifests) == [], name
    assert {m["metadata"]["namespace"] for m in manifests} == {NAMESPACE}


def test_strict_validation_catches_a_misspelled_field(rendered):
    _, manifests = rendered
    broken = json.loads(json.dumps(find(manifests, "Deployment")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    errors = validate_manifests([broken])
    assert len(errors) == 2 and all("readinesProbe" in e for e in errors), errors


def _checkov() -> str:
    found = shutil.which("checkov")
    fallback = Path(__file__).resolve().parents[2] / ".venv-checkov" / "bin" / "checkov"
    if found:
        return found
    assert fallback.exists(), "checkov not found: run `make venv` (it creates .venv-checkov)"
    return str(fallback)


@pytest.fixture(scope="module")
def checkov_results(rendered, tmp_path_factory) -> tuple[str, dict]:
    name, manifests = rendered
    directory = tmp_path_factory.mktemp(f"checkov-{name}")
    write_manifests(manifests, directory)
    proc = subprocess.run(
        [
            _checkov(),
            "--framework",
            "kubernetes",
            "--skip-download",
            "-o",
            "json",
            "-d",
            str(directory),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(proc.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["summary"]["parsing_errors"] == 0, proc.stderr[-2000:]
    return name, report


def test_checkov_finds_no_failed_check(checkov_results):
    name, report = checkov_results
    failed = [
        (c["check_id"], c["check_name"], c["resource"]) for c in report["results"]["failed_checks"]
    ]
    assert failed == [], f"{name}: {failed}"
    assert report["summary"]["passed"] > 50  # the scan really ran the Kubernetes checks


def test_every_checkov_skip_carries_a_reason(checkov_results):
    name, report = checkov_results
    skipped = {
        c["check_id"]: c["check_result"].get("suppress_comment", "")
        for c in report["results"]["skipped_checks"]
    }
    assert all(len(reason) > 40 for reason in skipped.values()), skipped
    # Only the uid check is skipped for good; the digest check is skipped only without a digest.
    expected = {"CKV_K8S_40"} if name == "production" else {"CKV_K8S_40", "CKV_K8S_43"}
    assert set(skipped) == expected
