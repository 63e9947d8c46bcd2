"""The chart's PrometheusRule, checked by the real promtool (Debian's `prometheus` package): the
rendered spec.groups pass `promtool check rules`, and `promtool test rules` shows every alert firing
on synthetic series that should page and silent on series that should not, including each window
of the latency burn-rate alerts. The runbook has a section for every alert."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from app.contract.metrics import PREDICT_ROUTES
from infra.chart_render import find, render_chart, validate_manifests, write_rule_file
from infra.monitoring import predict_route_regex
from tests.infra.alert_cases import (
    FULLNAME,
    NAMESPACE,
    alerts_of,
    render,
    rules_of,
    unit_tests,
)

REPO = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: apt-get install prometheus (.ci/run does)"
)


@pytest.fixture(scope="module")
def rule_file(tmp_path_factory) -> Path:
    return write_rule_file(render(), tmp_path_factory.mktemp("rules") / "rules.yaml")


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    assert PROMTOOL, "promtool not found"
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


# --- the object and its rules -----------------------------------------------------------------


def test_prometheus_rule_envelope_and_off_by_default():
    manifests = render()
    rule = find(manifests, "PrometheusRule")
    deployment = find(manifests, "Deployment")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"] == FULLNAME
    assert rule["metadata"]["namespace"] == NAMESPACE
    labels = rule["metadata"]["labels"]
    assert labels["release"] == "kube-prometheus-stack"
    for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance"):
        assert labels[key] == deployment["metadata"]["labels"][key]
    assert [g["name"] for g in rule["spec"]["groups"]] == [
        "uninlu.recording",
        "uninlu.slo",
        "uninlu.alerts",
    ]
    assert validate_manifests(manifests) == []  # the built-in kinds, with the CRD kind present
    assert find(render_chart({}), "PrometheusRule") is None


def test_every_expression_selects_the_release_namespace_and_the_predict_routes():
    rules = rules_of(render())
    for rule in rules:
        selectors = re.findall(r"\{([^{}]*)\}", rule["expr"])
        for selector in selectors:
            assert f'namespace="{NAMESPACE}"' in selector, rule.get("record") or rule["alert"]
    assert predict_route_regex() == "|".join(PREDICT_ROUTES)
    assert any(f'route=~"{predict_route_regex()}"' in rule["expr"] for rule in rules)


def test_alerts_carry_severity_summary_description_and_a_runbook_section():
    runbook = (REPO / "docs" / "runbook.md").read_text(encoding="utf-8")
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
        for heading in re.findall(r"^## (.+)$", runbook, flags=re.M)
    }
    alerts = alerts_of(render())
    assert len(alerts) == 8
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url"}
        assert re.search(r"\d", notes["description"]), name  # it names the numbers
        url, anchor = notes["runbook_url"].split("#")
        assert url == "https://github.com/example-org/uninlu/blob/main/docs/runbook.md"
        assert anchor == name.lower() and anchor in anchors, name


def test_thresholds_come_from_the_values():
    values = {
        "metrics": {
            "prometheusRule": {
                "enabled": True,
                "errorRatio": 0.02,
                "overloadRatio": 0.1,
                "overloadFor": "20m",
                "latencySloSeconds": 0.5,
                "restartsPerHour": 5,
                "hpaMaxedFor": "30m",
                "runbookUrl": "https://wiki.example.com/uninlu",
            }
        },
        "probes": {"modelLoadTimeoutSeconds": 600},
    }
    manifests = render(values)
    alerts = alerts_of(manifests)
    assert alerts["UninluHighErrorRatio"]["expr"].endswith("> 0.02")
    assert "(threshold 2 %)" in alerts["UninluHighErrorRatio"]["annotations"]["description"]
    assert alerts["UninluOverloaded"]["expr"].endswith("> 0.1")
    assert alerts["UninluOverloaded"]["for"] == "20m"
    assert alerts["UninluFrequentRestarts"]["expr"].endswith("> 5")
    assert alerts["UninluHPAAtMaxReplicas"]["for"] == "30m"
    assert alerts["UninluNoReadyPod"]["for"] == alerts["UninluModelNotLoaded"]["for"] == "600s"
    assert alerts["UninluNoReadyPod"]["annotations"]["runbook_url"].startswith(
        "https://wiki.example.com/uninlu#"
    )
    slow = {r["record"]: r["expr"] for r in rules_of(manifests) if "slow" in r.get("record", "")}
    assert len(slow) == 7 and all(r'le=~"0\\.5(\\.0)?"' in e for e in slow.values())
    assert "vector(0.5)" in next(
        r["expr"]
        for r in rules_of(manifests)
        if r.get("record") == "namespace:uninlu_latency_slo_seconds"
    )
    # Without an HPA there is no maxReplicas to sit at.
    values["autoscaling"] = {"enabled": False}
    assert "UninluHPAAtMaxReplicas" not in alerts_of(render(values))


def test_the_slo_must_be_a_latency_bucket_bound():
    from app.contract.metrics import LATENCY_BUCKETS
    from infra.chart_render import ChartError

    schema = yaml.safe_load((REPO / "infra" / "chart" / "values.schema.json").read_text())
    allowed = schema["properties"]["metrics"]["properties"]["prometheusRule"]["properties"]
    assert allowed["latencySloSeconds"]["enum"] == list(LATENCY_BUCKETS)
    with pytest.raises(ChartError, match="latencySloSeconds"):
        render({"metrics": {"prometheusRule": {"enabled": True, "latencySloSeconds": 0.8}}})


# --- promtool -----------------------------------------------------------------------------------


@needs_promtool
def test_promtool_checks_the_rendered_groups(rule_file):
    run = _promtool("check", "rules", str(rule_file), cwd=rule_file.parent)
    assert run.returncode == 0, run.stdout + run.stderr
    count = len(rules_of(render()))
    assert f"SUCCESS: {count} rules found" in run.stdout


def test_every_alert_has_a_firing_and_a_silent_unit_test():
    cases = [
        (case["alertname"], bool(case["exp_alerts"]))
        for test in unit_tests()
        for case in test["alert_rule_test"]
    ]
    assert {name for name, fires in cases if fires} == set(alerts_of(render()))
    assert {name for name, fires in cases if not fires} == set(alerts_of(render()))


@needs_promtool
def test_promtool_unit_tests_fire_and_stay_silent(rule_file):
    tests = {"rule_files": [rule_file.name], "evaluation_interval": "1m", "tests": unit_tests()}
    test_file = rule_file.parent / "tests.yaml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))
    run = _promtool("test", "rules", test_file.name, cwd=rule_file.parent)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout
