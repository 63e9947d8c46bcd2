"""The Grafana dashboard: the committed JSON is exactly what infra/dashboard.py generates, its
panels cover what an operator needs, its queries are valid PromQL on series that exist (the app's,
the chart's recording rules, kube-state-metrics/cAdvisor), and the chart ships it in a ConfigMap
for the Grafana sidecar when asked to. test_monitoring_live.py runs every query on a real
Prometheus."""

from __future__ import annotations

import json
import re

import promql_parser

from infra import dashboard
from infra.chart_render import find, render_chart, validate_manifests

NAMESPACE = "ml"


def test_committed_json_is_what_the_generator_builds():
    committed = dashboard.DASHBOARD_FILE.read_text(encoding="utf-8")
    assert committed == dashboard.render(), "run `python -m infra.dashboard` and commit the JSON"


def test_panels_cover_the_operators_questions():
    model = json.loads(dashboard.DASHBOARD_FILE.read_text(encoding="utf-8"))
    titles = [panel["title"] for panel in model["panels"]]
    for words in (
        "Traffic by route and status",
        "latency percentiles against the SLO",
        "Queue depth",
        "Queue wait",
        "Batch size",
        "Inference time by stage",
        "Rejections by reason",
        "Work thrown away and refused",
        "Scheduling rounds",
        "In-flight requests",
        "Model load time",
        "HPA's desired and max",
        "CPU against requests and limits",
        "Memory against requests and limits",
    ):
        assert any(words in title for title in titles), words
    assert [panel["id"] for panel in model["panels"]] == list(range(1, len(titles) + 1))
    # Laid out on Grafana's 24-column grid without overlaps.
    cells = set()
    for panel in model["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))
    names = [v["name"] for v in model["templating"]["list"]]
    assert names == ["datasource", "namespace", "name"]


def _recorded_names() -> set[str]:
    manifests = render_chart({"metrics": {"prometheusRule": {"enabled": True}}})
    groups = find(manifests, "PrometheusRule")["spec"]["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def _selectors(node) -> list:
    """Every vector selector of a parsed PromQL expression."""
    if isinstance(node, promql_parser.VectorSelector):
        return [node]
    if isinstance(node, promql_parser.MatrixSelector):
        return [node.vector_selector]
    children = []
    for attr in ("expr", "lhs", "rhs", "param"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            children.append(child)
    children += list(getattr(node, "args", None) or [])
    return [s for child in children for s in _selectors(child)]


def test_every_query_is_promql_on_known_series_of_the_selected_namespace():
    recorded = _recorded_names()
    used_records = set()
    for panel in dashboard.PANELS:
        for query in panel.queries:
            expr = query.expr.replace("$namespace", "ml").replace("$name", "uninlu")
            selectors = _selectors(promql_parser.parse(expr))
            assert selectors, expr
            for selector in selectors:
                name = selector.name
                assert name.startswith(("uninlu_", "kube_", "container_")) or name in recorded, name
                used_records |= {name} & recorded
                matchers = {m.name: m.value for m in selector.matchers.matchers}
                assert matchers.get("namespace") == "ml", expr
    # The dashboard reads the recording rules; none of them is recorded for nothing.
    unused = recorded - used_records
    assert unused <= {
        f"namespace:uninlu_predict_slow:ratio_rate{w}" for w in ("30m", "2h", "6h", "1d", "3d")
    }, unused


def test_chart_ships_the_dashboard_for_the_grafana_sidecar():
    values = {
        "metrics": {
            "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "uninlu"}}
        }
    }
    manifests = render_chart(values, name="nlu", namespace=NAMESPACE)
    (config_map,) = [m for m in manifests if m["metadata"]["name"] == "nlu-uninlu-dashboard"]
    assert config_map["kind"] == "ConfigMap"
    assert config_map["metadata"]["namespace"] == NAMESPACE
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "uninlu"}
    shipped = json.loads(config_map["data"]["uninlu.json"])
    assert shipped == json.loads(dashboard.DASHBOARD_FILE.read_text(encoding="utf-8"))
    assert validate_manifests(manifests) == []
    # Off by default, and no other ConfigMap carries the sidecar label.
    default = render_chart({}, name="nlu", namespace=NAMESPACE)
    assert not [m for m in default if re.search("dashboard", m["metadata"]["name"])]
    assert all("grafana_dashboard" not in m["metadata"].get("labels", {}) for m in default)
