"""The metrics pipeline the program deploys per stack file: the Prometheus Adapter's chart and its
rule for the HPA's texts-per-second metric (valid PromQL on the predict routes only), the metric
and its stack key pinned everywhere, and which Prometheus the prod adapter queries."""

from __future__ import annotations

import re

import promql_parser
import pytest
import yaml
from program_cases import STACKS, release_inputs, stack_yaml
from pulumi_harness import REPO, run_program

from app.contract.metrics import PREDICT_ROUTES, PREDICT_TEXTS_METRIC, PREDICT_TEXTS_TOTAL
from infra import monitoring
from infra.program import deploy


@pytest.fixture(scope="module", params=sorted(STACKS))
def result(request):
    return request.param, run_program(deploy, request.param, **STACKS[request.param])


def test_adapter_chart_version_and_rule(result):
    stack, res = result
    config = stack_yaml(stack)["monitoring"]
    adapter = release_inputs(res, "uninlu-monitoring-adapter")
    assert adapter["chart"] == "prometheus-adapter"
    assert adapter["version"] == monitoring.ADAPTER_VERSION
    assert adapter["repositoryOpts"] == {
        "repo": "https://prometheus-community.github.io/helm-charts"
    }
    assert adapter["namespace"] == config["namespace"]
    values = adapter["values"]
    # The image pinned too (the chart's default is its appVersion), and no external metrics.
    assert values["image"] == {
        "repository": "registry.k8s.io/prometheus-adapter/prometheus-adapter",
        "tag": "v0.12.0",
    }
    assert values["rules"]["external"] == []
    if stack == "dev":
        assert values["prometheus"]["url"] == "http://prometheus-server.monitoring.svc"
        assert values["prometheus"]["port"] == 80
        prometheus = release_inputs(res, "uninlu-monitoring-prometheus")
        assert (prometheus["chart"], prometheus["name"]) == ("prometheus", "prometheus")
        assert prometheus["version"] == monitoring.PROMETHEUS_VERSION
        assert prometheus["values"]["server"]["persistentVolume"] == {"enabled": False}
    else:
        assert values["prometheus"]["url"] == config["prometheusUrl"]
        assert values["prometheus"]["port"] == config["prometheusPort"]
    assert values["rules"]["default"] is False
    (rule,) = values["rules"]["custom"]
    assert rule["name"] == {"matches": f"^{PREDICT_TEXTS_TOTAL}$", "as": PREDICT_TEXTS_METRIC}
    route_matcher = 'route=~"' + "|".join(PREDICT_ROUTES) + '"'
    assert rule["seriesQuery"].startswith(PREDICT_TEXTS_TOTAL + "{")
    assert route_matcher in rule["seriesQuery"]
    # The query the HPA's numbers come from must filter the routes too, and be a per-pod rate.
    assert rule["metricsQuery"] == (
        f"sum(rate(<<.Series>>{{<<.LabelMatchers>>,{route_matcher}}}[2m])) by (<<.GroupBy>>)"
    )
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}


def test_adapter_rule_is_valid_promql_for_the_predict_routes_only():
    """The queries the adapter runs, parsed by a real PromQL parser (a typo here would only show
    up in a live cluster, as an HPA stuck at <unknown>)."""
    rule = monitoring.predict_texts_rule()
    # What the adapter substitutes when the HPA asks for the metric of two pods.
    query = (
        rule["metricsQuery"]
        .replace("<<.Series>>", PREDICT_TEXTS_TOTAL)
        .replace("<<.LabelMatchers>>", 'namespace="uninlu",pod=~"uninlu-a|uninlu-b"')
        .replace("<<.GroupBy>>", "pod")
    )
    parsed = promql_parser.parse(query)
    assert isinstance(parsed, promql_parser.AggregateExpr)
    assert str(parsed.op) == "sum" and parsed.modifier.labels == ["pod"]
    assert parsed.expr.func.name == "rate"
    (window,) = parsed.expr.args
    assert window.range.total_seconds() == 120
    selector = window.vector_selector
    assert selector.name == PREDICT_TEXTS_TOTAL
    matchers = {m.name: (m.op, m.value) for m in selector.matchers.matchers}
    assert matchers["namespace"] == (promql_parser.MatchOp.Equal, "uninlu")
    op, route_regex = matchers["route"]
    assert op == promql_parser.MatchOp.Re
    # PromQL anchors regex matchers: exactly the predict routes, nothing else.
    for route in PREDICT_ROUTES:
        assert re.fullmatch(route_regex, route)
    for other in ("/health", "/ready", "/metrics", "/predict/other", "/"):
        assert not re.fullmatch(route_regex, other)

    series = promql_parser.parse(rule["seriesQuery"])
    assert isinstance(series, promql_parser.VectorSelector) and series.name == PREDICT_TEXTS_TOTAL
    series_matchers = {m.name: (m.op, m.value) for m in series.matchers.matchers}
    assert series_matchers["route"] == (promql_parser.MatchOp.Re, route_regex)
    assert series_matchers["pod"] == (promql_parser.MatchOp.NotEqual, "")


def test_keda_query_is_the_adapter_rules_rate_summed_over_the_deployments_pods():
    """KEDA's prometheus trigger, parsed by a real PromQL parser: one element (sum without
    `by`), the adapter rule's counter, routes and window, and the Deployment's pods only."""
    query = monitoring.deployment_texts_query("uninlu", "uninlu")
    parsed = promql_parser.parse(query)
    assert isinstance(parsed, promql_parser.AggregateExpr)
    assert str(parsed.op) == "sum" and parsed.modifier is None
    assert parsed.expr.func.name == "rate"
    (window,) = parsed.expr.args
    rule = promql_parser.parse(
        monitoring.predict_texts_rule()["metricsQuery"]
        .replace("<<.Series>>", PREDICT_TEXTS_TOTAL)
        .replace("<<.LabelMatchers>>", 'namespace="uninlu"')
        .replace("<<.GroupBy>>", "pod")
    )
    (rule_window,) = rule.expr.args
    assert window.range == rule_window.range
    assert window.vector_selector.name == rule_window.vector_selector.name == PREDICT_TEXTS_TOTAL
    matchers = {m.name: (m.op, m.value) for m in window.vector_selector.matchers.matchers}
    rule_matchers = {m.name: (m.op, m.value) for m in rule_window.vector_selector.matchers.matchers}
    assert matchers["route"] == rule_matchers["route"]
    assert matchers["namespace"] == (promql_parser.MatchOp.Equal, "uninlu")
    op, pods = matchers["pod"]
    assert op == promql_parser.MatchOp.Re
    # RE2 anchors the regex as Python's fullmatch does: the Deployment's pods, nothing else.
    for pod in ("uninlu-6d4cf7b9c8-x2kq4", "uninlu-5b7d9-abcde"):
        assert re.fullmatch(pods, pod), pod
    for pod in ("uninlu-canary-6d4cf7b9c8-x2kq4", "uninlu-0", "other-6d4cf7b9c8-x2kq4", "uninlu"):
        assert not re.fullmatch(pods, pod), pod
    with pytest.raises(ValueError, match="regex escaping"):
        monitoring.deployment_texts_query("uninlu", "a.b")


def test_texts_metric_and_its_stack_key_are_pinned_everywhere():
    """The HPA's metric name and its target key must agree across the app, the adapter rule, the
    chart, the stack files and the docs; the request-counting names they replaced are gone."""
    rule = monitoring.predict_texts_rule()
    assert rule["name"]["as"] == PREDICT_TEXTS_METRIC
    assert PREDICT_TEXTS_TOTAL in rule["seriesQuery"]
    hpa_template = (REPO / "infra" / "chart" / "templates" / "hpa.yaml").read_text()
    assert f"name: {PREDICT_TEXTS_METRIC}\n" in hpa_template
    assert "$a.targetTextsPerSecondPerPod" in hpa_template
    chart_values = yaml.safe_load((REPO / "infra" / "chart" / "values.yaml").read_text())
    assert chart_values["autoscaling"]["targetTextsPerSecondPerPod"] > 0
    for stack in STACKS:
        assert stack_yaml(stack)["autoscaling"]["targetTextsPerSecondPerPod"] > 0
    docs = [REPO / "README.md", REPO / "docs" / "stack-config.md"]
    for doc in docs:
        text = doc.read_text()
        assert PREDICT_TEXTS_METRIC in text, doc
        assert "targetTextsPerSecondPerPod" in text, doc
    old_names = ("uninlu_predict_requests_per_second", "requestsPerSecondMetric")
    places = [
        *docs,
        REPO / "Pulumi.dev.yaml",
        REPO / "Pulumi.prod.yaml",
        *sorted((REPO / "infra").rglob("*.py")),
        *sorted((REPO / "infra" / "chart").rglob("*.yaml")),
        *sorted((REPO / "infra" / "chart").rglob("*.json")),
        *sorted((REPO / "infra" / "chart").rglob("*.txt")),
    ]
    for path in places:
        text = path.read_text()
        assert not [name for name in old_names if name in text], path


def test_prod_adapter_queries_the_prometheus_clusterip_service_not_the_headless_one():
    url = stack_yaml("prod")["monitoring"]["prometheusUrl"]
    # kube-prometheus-stack names it <fullname>-prometheus (templates/prometheus/service.yaml).
    assert url == "http://kube-prometheus-stack-prometheus.monitoring.svc"
    assert "prometheus-operated" not in url
