"""The chart's rendered alert rules and the promtool unit-test cases for them: synthetic series
that must page, and series that must stay silent, for every alert (each window of the latency
burn-rate alerts too)."""

from __future__ import annotations

import functools

from infra.chart_render import find, render_chart

NAMESPACE = "ml"
FULLNAME = "nlu-uninlu"
ON = {
    "metrics": {
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    }
}


def render(values: dict | None = None) -> list[dict]:
    return (
        default_render()
        if values is None
        else render_chart(values, name="nlu", namespace=NAMESPACE)
    )


@functools.cache
def default_render() -> list[dict]:
    return render_chart(ON, name="nlu", namespace=NAMESPACE)


def rules_of(manifests: list[dict]) -> list[dict]:
    return [
        rule
        for group in find(manifests, "PrometheusRule")["spec"]["groups"]
        for rule in group["rules"]
    ]


def alerts_of(manifests: list[dict]) -> dict[str, dict]:
    return {rule["alert"]: rule for rule in rules_of(manifests) if "alert" in rule}


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
    rule = alerts_of(render())[alert]
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


def unit_tests() -> list[dict]:
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
        "10% of predict requests in namespace ml were refused with 429 overloaded (queue full, "
        "or a backlog that would make their deadlines pass) over the last 2 minutes, for 10m "
        "(threshold 5 %).",
        "UninluOverloaded",
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
        # Both causes of a 429 add up: 4 % queue full and 6 % predicted late warn.
        _case(
            [
                _requests("200", "0+90x20"),
                _requests("429", "0+10x20"),
                _series("uninlu_rejected_total", "0+4x20", reason="queue_full", pod="p1"),
                _series("uninlu_rejected_total", "0+6x20", reason="predicted_late", pod="p1"),
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
