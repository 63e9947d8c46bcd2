"""The chart's PrometheusRule, checked by the real promtool (Debian's `prometheus` package): the
rendered spec.groups pass `promtool check rules`, and `promtool test rules` shows every alert firing
on synthetic series that should page and silent on series that should not, including each window
of the latency burn-rate alerts. The runbook has a section for every alert."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from app.contract.metrics import PREDICT_ROUTES
from infra.chart_render import find, render_chart, validate_manifests, write_rule_file
from infra.monitoring import predict_route_regex

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "ml"
FULLNAME = "nlu-uninlu"
ON = {
    "metrics": {
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    }
}
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: apt-get install prometheus (.ci/run does)"
)


def _render(values: dict | None = None) -> list[dict]:
    return _default() if values is None else render_chart(values, name="nlu", namespace=NAMESPACE)


@functools.cache
def _default() -> list[dict]:
    return render_chart(ON, name="nlu", namespace=NAMESPACE)


def _rules(manifests: list[dict]) -> list[dict]:
    return [
        rule
        for group in find(manifests, "PrometheusRule")["spec"]["groups"]
        for rule in group["rules"]
    ]


def _alerts(manifests: list[dict]) -> dict[str, dict]:
    return {rule["alert"]: rule for rule in _rules(manifests) if "alert" in rule}


@pytest.fixture(scope="module")
def rule_file(tmp_path_factory) -> Path:
    return write_rule_file(_render(), tmp_path_factory.mktemp("rules") / "rules.yaml")


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    assert PROMTOOL, "promtool not found"
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


# --- the object and its rules -----------------------------------------------------------------


def test_prometheus_rule_envelope_and_off_by_default():
    manifests = _render()
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
    rules = _rules(_render())
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
    alerts = _alerts(_render())
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
    manifests = _render(values)
    alerts = _alerts(manifests)
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
    slow = {r["record"]: r["expr"] for r in _rules(manifests) if "slow" in r.get("record", "")}
    assert len(slow) == 7 and all(r'le=~"0\\.5(\\.0)?"' in e for e in slow.values())
    assert "vector(0.5)" in next(
        r["expr"]
        for r in _rules(manifests)
        if r.get("record") == "namespace:uninlu_latency_slo_seconds"
    )
    # Without an HPA there is no maxReplicas to sit at.
    values["autoscaling"] = {"enabled": False}
    assert "UninluHPAAtMaxReplicas" not in _alerts(_render(values))


def test_the_slo_must_be_a_latency_bucket_bound():
    from app.contract.metrics import LATENCY_BUCKETS
    from infra.chart_render import ChartError

    schema = yaml.safe_load((REPO / "infra" / "chart" / "values.schema.json").read_text())
    allowed = schema["properties"]["metrics"]["properties"]["prometheusRule"]["properties"]
    assert allowed["latencySloSeconds"]["enum"] == list(LATENCY_BUCKETS)
    with pytest.raises(ChartError, match="latencySloSeconds"):
        _render({"metrics": {"prometheusRule": {"enabled": True, "latencySloSeconds": 0.8}}})


# --- promtool -----------------------------------------------------------------------------------


@needs_promtool
def test_promtool_checks_the_rendered_groups(rule_file):
    run = _promtool("check", "rules", str(rule_file), cwd=rule_file.parent)
    assert run.returncode == 0, run.stdout + run.stderr
    count = len(_rules(_render()))
    assert f"SUCCESS: {count} rules found" in run.stdout


def _series(name: str, values: str, **labels: str) -> dict:
    inner = ",".join(f'{k}="{v}"' for k, v in {"namespace": NAMESPACE, **labels}.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def _requests(status: str, values: str, route: str = "/predict") -> dict:
    return _series(
        "uninlu_requests_total", values, route=route, method="POST", status=status, pod="p1"
    )


def _latency(good: str, total: str) -> list[dict]:
    """Predict latency histogram: `good` = requests within the 1 s SLO (le="1.0"), `total` = all."""
    labels = {"route": "/predict", "pod": "p1"}
    return [
        _series("uninlu_request_duration_seconds_bucket", good, le="1.0", **labels),
        _series("uninlu_request_duration_seconds_count", total, **labels),
    ]


def _case(series: list[dict], at: str, alert: str, fires: list[dict] | None = None) -> dict:
    return {
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": fires or []}],
    }


def _fired(severity: str, description: str, alert: str, extra: dict | None = None) -> list[dict]:
    rule = _alerts(_render())[alert]
    return [
        {
            "exp_labels": {"severity": severity, "namespace": NAMESPACE, **(extra or {})},
            "exp_annotations": {
                "summary": rule["annotations"]["summary"],
                "description": description,
                "runbook_url": rule["annotations"]["runbook_url"],
            },
        }
    ]


def _unit_tests() -> list[dict]:
    pod = {"pod": f"{FULLNAME}-7f9c-abcde"}
    server = {**pod, "container": "server"}
    hpa = {"horizontalpodautoscaler": FULLNAME}
    deploy = {"deployment": FULLNAME}
    error = _fired(
        "critical",
        "5% of predict requests in namespace ml answered 5xx over the last 2 minutes, "
        "for 5 minutes (threshold 1 %).",
        "UninluHighErrorRatio",
    )
    overload = _fired(
        "warning",
        "10% of predict requests in namespace ml were refused with 429 (queue full) over the "
        "last 2 minutes, for 10m (threshold 5 %).",
        "UninluOverloaded",
        {"reason": "queue_full"},
    )
    fast = _fired(
        "critical",
        "80% of predict requests in namespace ml took longer than the 1 s SLO; the budget is 5 %, "
        "and this burns it at 6x (6 h and 30 m windows) or 14.4x (1 h and 5 m) or more.",
        "UninluLatencyBudgetBurn",
    )
    slow = _fired(
        "warning",
        "20% of predict requests in namespace ml took longer than the 1 s SLO; the budget is 5 %, "
        "and this burns it at 3x (1 d and 2 h windows) or 1x (3 d and 6 h) or more.",
        "UninluLatencyBudgetSlowBurn",
    )
    return [
        # 5xx: 5 % for 10 minutes pages; 0.5 % does not, nor does 5 % for 3 minutes (for: 5m).
        _case(
            [_requests("200", "0+95x15"), _requests("503", "0+5x15")],
            "10m",
            "UninluHighErrorRatio",
            error,
        ),
        _case(
            [_requests("200", "0+995x15"), _requests("503", "0+5x15")],
            "10m",
            "UninluHighErrorRatio",
        ),
        _case(
            [_requests("200", "0+95x15"), _requests("503", "0+5x3 15x12")],
            "10m",
            "UninluHighErrorRatio",
        ),
        # 429: 10 % refused for 15 minutes warns; for 8 minutes it does not (for: 10m); 2 % never.
        _case(
            [
                _requests("200", "0+90x20"),
                _requests("429", "0+10x20"),
                _series("uninlu_rejected_total", "0+10x20", reason="queue_full", pod="p1"),
            ],
            "15m",
            "UninluOverloaded",
            overload,
        ),
        _case(
            [
                _requests("200", "0+90x20"),
                _requests("429", "0+10x8 80x12"),
                _series("uninlu_rejected_total", "0+10x8 80x12", reason="queue_full", pod="p1"),
            ],
            "15m",
            "UninluOverloaded",
        ),
        _case(
            [
                _requests("200", "0+98x20"),
                _requests("429", "0+2x20"),
                _series("uninlu_rejected_total", "0+2x20", reason="queue_full", pod="p1"),
            ],
            "15m",
            "UninluOverloaded",
        ),
        # Fast burn: 80 % slow for 65 minutes: both windows of the 1 h / 5 m pair are above 72 %.
        _case(_latency("0+20x70", "0+100x70"), "65m", "UninluLatencyBudgetBurn", fast),
        # Short window only: a 5-minute blip after an hour of fast answers does not page.
        _case(_latency("0+100x60 6000x10", "0+100x70"), "65m", "UninluLatencyBudgetBurn"),
        # Long window only: an hour at 90 % slow, recovered 40 minutes ago, no longer pages.
        _case(_latency("0+10x60 600+100x40", "0+100x100"), "100m", "UninluLatencyBudgetBurn"),
        # Slow burn: 20 % slow for 150 minutes warns (1 d / 2 h above 15 %) and does not page.
        {
            **_case(_latency("0+80x150", "0+100x150"), "150m", "UninluLatencyBudgetSlowBurn", slow),
            "alert_rule_test": [
                {
                    "eval_time": "150m",
                    "alertname": "UninluLatencyBudgetSlowBurn",
                    "exp_alerts": slow,
                },
                {"eval_time": "150m", "alertname": "UninluLatencyBudgetBurn", "exp_alerts": []},
            ],
        },
        # 4 % slow for 3 hours stays within the 5 % budget.
        _case(_latency("0+96x180", "0+100x180"), "3h", "UninluLatencyBudgetSlowBurn"),
        # No ready pod beyond the 300 s load budget pages; a pod that becomes ready in 4 min not.
        _case(
            [_series("kube_deployment_status_replicas_available", "0x10", **deploy)],
            "6m",
            "UninluNoReadyPod",
            _fired(
                "critical",
                f"Deployment ml/{FULLNAME} has had 0 available pods for more "
                "than 300 s (probes.modelLoadTimeoutSeconds); the service answers nothing.",
                "UninluNoReadyPod",
                deploy,
            ),
        ),
        _case(
            [_series("kube_deployment_status_replicas_available", "0x4 1x6", **deploy)],
            "8m",
            "UninluNoReadyPod",
        ),
        _case(
            [_series("uninlu_model_ready", "0x10", **pod)],
            "6m",
            "UninluModelNotLoaded",
            _fired(
                "warning",
                f"Pod ml/{pod['pod']} reports uninlu_model_ready 0 for more than "
                "300 s (probes.modelLoadTimeoutSeconds).",
                "UninluModelNotLoaded",
                pod,
            ),
        ),
        _case([_series("uninlu_model_ready", "0x3 1x7", **pod)], "8m", "UninluModelNotLoaded"),
        # HPA at maxReplicas for 16 minutes warns; for 10 minutes it does not.
        _case(
            [
                _series("kube_horizontalpodautoscaler_status_current_replicas", "6x20", **hpa),
                _series("kube_horizontalpodautoscaler_spec_max_replicas", "6x20", **hpa),
            ],
            "16m",
            "UninluHPAAtMaxReplicas",
            _fired(
                "warning",
                f"HPA ml/{FULLNAME} has run 6 replicas, its maxReplicas, for 15m; more load "
                "cannot be absorbed.",
                "UninluHPAAtMaxReplicas",
                hpa,
            ),
        ),
        _case(
            [
                _series("kube_horizontalpodautoscaler_status_current_replicas", "6x10 4x10", **hpa),
                _series("kube_horizontalpodautoscaler_spec_max_replicas", "6x20", **hpa),
            ],
            "16m",
            "UninluHPAAtMaxReplicas",
        ),
        # Restarts: one every 10 minutes (6 an hour) warns; 2 in an hour do not.
        _case(
            [_series("kube_pod_container_status_restarts_total", "0+0.1x60", **server)],
            "60m",
            "UninluFrequentRestarts",
            _fired(
                "warning",
                f"Container server of pod ml/{pod['pod']} restarted 6 times in "
                "the last hour (threshold 3).",
                "UninluFrequentRestarts",
                server,
            ),
        ),
        _case(
            [_series("kube_pod_container_status_restarts_total", "0x20 1x20 2x20", **server)],
            "60m",
            "UninluFrequentRestarts",
        ),
    ]


def test_every_alert_has_a_firing_and_a_silent_unit_test():
    cases = [
        (case["alertname"], bool(case["exp_alerts"]))
        for test in _unit_tests()
        for case in test["alert_rule_test"]
    ]
    assert {name for name, fires in cases if fires} == set(_alerts(_render()))
    assert {name for name, fires in cases if not fires} == set(_alerts(_render()))


@needs_promtool
def test_promtool_unit_tests_fire_and_stay_silent(rule_file):
    tests = {"rule_files": [rule_file.name], "evaluation_interval": "1m", "tests": _unit_tests()}
    test_file = rule_file.parent / "tests.yaml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))
    run = _promtool("test", "rules", test_file.name, cwd=rule_file.parent)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout
