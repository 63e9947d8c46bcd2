"""The Grafana dashboard the chart ships (infra/chart/dashboards/uninlu.json), built with Grafana's
own grafana-foundation-sdk rather than hand-written JSON.

Why this library: grafana-foundation-sdk is maintained by Grafana Labs and generated from
Grafana's own schemas (one release line per Grafana version; pinned to the 11.6 line), so the
builders know every panel option. grafanalib, the older community library, hand-writes a class
per panel that trails new Grafana releases; grafonnet needs a Jsonnet toolchain.

Panels read the chart's recording rules (templates/prometheusrule.yaml) where one exists, and the
kube-state-metrics / cAdvisor series of kube-prometheus-stack for replicas, CPU and memory.
`$namespace` picks the release's namespace, `$name` its resource name (the chart's fullname,
which the Pulumi program fixes to infra.service.FULLNAME, the variable's default).

    python -m infra.dashboard          # regenerate the committed JSON (a test checks it is current)
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from grafana_foundation_sdk.builders import dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableOption, VariableRefresh

from infra.chart_render import CHART_DIR
from infra.monitoring import predict_route_regex
from infra.service import FULLNAME

DASHBOARD_FILE = CHART_DIR / "dashboards" / "uninlu.json"
UID = "uninlu-service"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
NS = 'namespace="$namespace"'
PREDICT = f'{NS},route=~"{predict_route_regex()}"'
SERVER = f'{NS},pod=~"$name-.+",container="server"'
# Model tokens the backends ran (the denominator of the wasted and refused shares).
EXECUTED = f'rate(uninlu_backend_tokens_total{{{NS},kind="real"}}[2m])'
# The p95 SLO's error budget: the burn rate is the slow share divided by it (5 %).
LATENCY_BUDGET = 0.05


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]


def _q(expr: str, legend: str) -> Query:
    return Query(expr, legend)


def _resource_lines(usage: str, resource: str) -> tuple[Query, ...]:
    requests = "kube_pod_container_resource_requests"
    limits = "kube_pod_container_resource_limits"
    return (
        _q(usage, "{{pod}}"),
        _q(f'max({requests}{{{SERVER},resource="{resource}"}})', "request"),
        _q(f'max({limits}{{{SERVER},resource="{resource}"}})', "limit"),
    )


PANELS: tuple[PanelSpec, ...] = (
    PanelSpec(
        "Traffic by route and status",
        "HTTP requests per second answered, by route template and status code.",
        "reqps",
        (_q(f"namespace_route_status:uninlu_requests:rate2m{{{NS}}}", "{{route}} {{status}}"),),
    ),
    PanelSpec(
        "Texts per second",
        "Texts in predict calls (a batch of n counts n), by route and by pod: what the HPA "
        "scales on.",
        "cps",
        (
            _q(f"namespace_route:uninlu_predict_texts:rate2m{{{NS}}}", "{{route}}"),
            _q(f"namespace_pod:uninlu_predict_texts:rate2m{{{NS}}}", "{{pod}}"),
        ),
    ),
    PanelSpec(
        "Predict latency percentiles against the SLO",
        "p50 / p95 / p99 of the predict routes from the request-duration histogram; the p95 SLO "
        "as a line.",
        "s",
        (
            _q(
                f"namespace_route:uninlu_request_duration_seconds:histogram_quantile2m{{{PREDICT}}}",
                "{{route}} p{{quantile}}",
            ),
            _q(f"namespace:uninlu_latency_slo_seconds{{{NS}}}", "SLO (p95)"),
        ),
    ),
    PanelSpec(
        "5xx ratio and latency budget burn",
        "Share of predict requests answered 5xx, and how fast slow requests burn the p95 SLO's "
        "5 % budget (1 = exactly on budget; the page fires at 14.4 over 1 h and 5 m).",
        "percentunit",
        (
            _q(f"namespace:uninlu_requests_5xx:ratio_rate2m{{{NS}}}", "5xx ratio"),
            _q(f"namespace:uninlu_predict_slow:ratio_rate5m{{{NS}}} / {LATENCY_BUDGET}", "burn 5m"),
            _q(f"namespace:uninlu_predict_slow:ratio_rate1h{{{NS}}} / {LATENCY_BUDGET}", "burn 1h"),
        ),
    ),
    PanelSpec(
        "Rejections by reason",
        "Refused requests per predict request, by cause (queue_full = 429 overloaded at "
        "MAX_QUEUE; predicted_late = 429 overloaded, the backlog would make a deadline pass; "
        "deadline_exceeded = 504; shutting_down = 503; text_too_long, body_too_large, "
        "too_many_items = 413; invalid_request, too_complex = 422).",
        "percentunit",
        (
            _q(f"namespace_reason:uninlu_rejected:ratio_rate2m{{{NS}}} > 0", "{{reason}}"),
            _q(f"namespace_status:uninlu_requests_4xx:ratio_rate2m{{{NS}}}", "status {{status}}"),
        ),
    ),
    PanelSpec(
        "Work thrown away and refused",
        "Model tokens spent on predictions that then ended without an output (deadline, "
        "client gone, shutdown, error), and the estimated tokens of predictions refused before "
        "any compute, each as a share of the model tokens the backends ran, by cause.",
        "percentunit",
        (
            _q(
                f"(sum by (reason) (rate(uninlu_wasted_tokens_total{{{NS}}}[2m])) "
                f"/ ignoring (reason) group_left sum({EXECUTED}))",
                "wasted: {{reason}}",
            ),
            _q(
                f"(sum by (reason) (rate(uninlu_refused_tokens_total{{{NS}}}[2m])) "
                f"/ ignoring (reason) group_left sum({EXECUTED}))",
                "refused: {{reason}}",
            ),
        ),
    ),
    PanelSpec(
        "Scheduling rounds against the backend's speed",
        "p95 wall time of a scheduling round (they aim at ROUND_BUDGET_MS), and the scheduler's "
        "measure of the backend: seconds per 1,000 model tokens, by stage.",
        "s",
        (
            _q(
                "histogram_quantile(0.95, sum by (le) "
                f"(rate(uninlu_round_seconds_bucket{{{NS}}}[2m])))",
                "round p95",
            ),
            _q(
                f"max by (stage) (uninlu_backend_seconds_per_token{{{NS}}}) * 1000",
                "{{stage}}: s per 1,000 tokens",
            ),
        ),
    ),
    PanelSpec(
        "Queue depth",
        "Predictions admitted to the batcher and not finished, per pod (MAX_QUEUE answers 429).",
        "short",
        (_q(f"sum by (pod) (uninlu_queue_depth{{{NS}}})", "{{pod}}"),),
    ),
    PanelSpec(
        "Queue wait p95",
        "How long a prediction waited before the inference worker took it.",
        "s",
        (_q(f"namespace:uninlu_queue_wait_seconds:histogram_quantile2m{{{NS}}}", "p95"),),
    ),
    PanelSpec(
        "Batch size",
        "Mean number of different requests that shared one backend call.",
        "short",
        (_q(f"namespace:uninlu_batch_size:mean2m{{{NS}}}", "mean"),),
    ),
    PanelSpec(
        "Inference time by stage (p95)",
        "Worker time per stage: tokenize, encode and score (backend calls), decode.",
        "s",
        (
            _q(
                "histogram_quantile(0.95, sum by (stage, le) "
                f"(rate(uninlu_inference_seconds_bucket{{{NS}}}[2m])))",
                "{{stage}}",
            ),
        ),
    ),
    PanelSpec(
        "In-flight requests",
        "HTTP requests being handled now, per pod.",
        "short",
        (_q(f"sum by (pod) (uninlu_inflight_requests{{{NS}}})", "{{pod}}"),),
    ),
    PanelSpec(
        "Model load time",
        "Seconds each pod took to load and warm up the model (the startup budget is "
        "probes.modelLoadTimeoutSeconds).",
        "s",
        (_q(f"max by (pod) (uninlu_model_load_seconds{{{NS}}})", "{{pod}}"),),
    ),
    PanelSpec(
        "Replicas: ready against the HPA's desired and max",
        "Pods whose model is ready, the Deployment's ready replicas, and the HPA's desired and "
        "maximum replicas (kube-state-metrics).",
        "short",
        (
            _q(f"sum(uninlu_model_ready{{{NS}}})", "model ready"),
            _q(f'kube_deployment_status_replicas_ready{{{NS},deployment="$name"}}', "ready"),
            _q(
                "kube_horizontalpodautoscaler_status_desired_replicas"
                f'{{{NS},horizontalpodautoscaler="$name"}}',
                "desired",
            ),
            _q(
                f'kube_horizontalpodautoscaler_spec_max_replicas{{{NS},horizontalpodautoscaler="$name"}}',
                "max",
            ),
        ),
    ),
    PanelSpec(
        "CPU against requests and limits",
        "Server container CPU (cores, cAdvisor) against its request and limit.",
        "short",
        _resource_lines(
            f"sum by (pod) (rate(container_cpu_usage_seconds_total{{{SERVER}}}[2m]))", "cpu"
        ),
    ),
    PanelSpec(
        "Memory against requests and limits",
        "Server container working set (cAdvisor) against its request and limit.",
        "bytes",
        _resource_lines(f"sum by (pod) (container_memory_working_set_bytes{{{SERVER}}})", "memory"),
    ),
)


def _panel(panel_id: int, spec: PanelSpec) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .id(panel_id)
        .title(spec.title)
        .description(spec.description)
        .datasource(DATASOURCE)
        .unit(spec.unit)
        .min(0)
        .height(8)
        .span(12)
    )
    for index, query in enumerate(spec.queries):
        panel = panel.with_target(
            prometheus.Dataquery()
            .expr(query.expr)
            .legend_format(query.legend)
            .ref_id(chr(ord("A") + index))
            .datasource(DATASOURCE)
        )
    return panel


def build() -> dict:
    """The dashboard as Grafana's JSON model (plain data, ready to serialise)."""
    builder = (
        dashboard.Dashboard("uninlu: model service")
        .uid(UID)
        .tags(["uninlu", "kubernetes"])
        .description(
            "SiameseUniNLU model service: traffic, latency against the SLO, queue and "
            "batching, rejections, replicas and resources."
        )
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(
            dashboard.QueryVariable("namespace")
            .label("Namespace")
            .datasource(DATASOURCE)
            .query("label_values(uninlu_build_info, namespace)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        )
        .with_variable(
            dashboard.TextBoxVariable("name")
            .label("Release fullname")
            .default_value(FULLNAME)
            .current(VariableOption(text=FULLNAME, value=FULLNAME))
        )
    )
    for panel_id, spec in enumerate(PANELS, start=1):
        builder = builder.with_panel(_panel(panel_id, spec))
    return json.loads(json.dumps(builder.build(), cls=JSONEncoder))


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    DASHBOARD_FILE.parent.mkdir(parents=True, exist_ok=True)
    DASHBOARD_FILE.write_text(render(), encoding="utf-8")
    print(f"wrote {DASHBOARD_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
