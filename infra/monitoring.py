"""The metrics pipeline the HPA needs: Prometheus Adapter (+ Prometheus, metrics-server on laptops).

The adapter turns the app's `uninlu_predict_texts_total` counter (texts in predict calls, every
status) into the Pods metric `uninlu_predict_texts_per_second` of the custom metrics API. Chart
versions are pinned, so a `pulumi up` never picks up an upstream chart change unannounced.
"""

from __future__ import annotations

import re
from typing import Any

import pulumi
from pulumi_kubernetes.helm.v3 import Release, RepositoryOptsArgs

from app.contract.metrics import PREDICT_ROUTES, PREDICT_TEXTS_METRIC, PREDICT_TEXTS_TOTAL
from infra.config import Monitoring as MonitoringSettings

COMMUNITY_REPO = "https://prometheus-community.github.io/helm-charts"
ADAPTER_CHART = "prometheus-adapter"
ADAPTER_VERSION = "5.3.0"
PROMETHEUS_CHART = "prometheus"
PROMETHEUS_VERSION = "27.19.0"
METRICS_SERVER_REPO = "https://kubernetes-sigs.github.io/metrics-server/"
METRICS_SERVER_CHART = "metrics-server"
METRICS_SERVER_VERSION = "3.12.2"
# Release names are fixed (not auto-named) so the in-cluster Prometheus URL is predictable.
PROMETHEUS_RELEASE = "prometheus"
# The prometheus chart names its server Service "<release>-server" and serves it on port 80.
IN_CLUSTER_PROMETHEUS_URL = "http://{release}-server.{namespace}.svc"
IN_CLUSTER_PROMETHEUS_PORT = 80
# Long enough to hold several scrapes at the small Prometheus's 15 s interval.
RATE_WINDOW = "2m"


def predict_route_regex() -> str:
    """PromQL regex matching exactly the predict route templates (they contain no regex syntax)."""
    for route in PREDICT_ROUTES:
        if not re.fullmatch(r"[/A-Za-z0-9_-]+", route):
            raise ValueError(f"route {route!r} would need PromQL regex escaping")
    return "|".join(PREDICT_ROUTES)


def predict_texts_rule() -> dict[str, Any]:
    """The adapter rule (prometheus-adapter config format) for the HPA's texts-per-second metric:
    the per-pod rate of texts offered on the predict routes, whatever the status, so load that is
    being refused (429) still asks for more pods.

    The route filter is repeated in metricsQuery: seriesQuery only selects which series the
    adapter discovers; the query it runs for the HPA gets just namespace/pod matchers from
    <<.LabelMatchers>>.
    """
    routes = f'route=~"{predict_route_regex()}"'
    return {
        "seriesQuery": f'{PREDICT_TEXTS_TOTAL}{{{routes},namespace!="",pod!=""}}',
        "resources": {
            "overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
        },
        "name": {"matches": f"^{PREDICT_TEXTS_TOTAL}$", "as": PREDICT_TEXTS_METRIC},
        "metricsQuery": (
            f"sum(rate(<<.Series>>{{<<.LabelMatchers>>,{routes}}}[{RATE_WINDOW}]))"
            " by (<<.GroupBy>>)"
        ),
    }


def adapter_values(prometheus_url: str, prometheus_port: int) -> dict[str, Any]:
    """Values for the prometheus-adapter chart: only our rule, so it lists no unrelated series."""
    return {
        "prometheus": {"url": prometheus_url, "port": prometheus_port, "path": ""},
        "rules": {"default": False, "custom": [predict_texts_rule()], "external": []},
        "resources": {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"memory": "256Mi"},
        },
    }


def prometheus_values() -> dict[str, Any]:
    """A small, throw-away Prometheus for a laptop cluster: server only, no disk, short retention.

    Its default `kubernetes-pods` job scrapes pods annotated prometheus.io/scrape (the chart sets
    them) and labels series with namespace and pod, which the adapter rule maps to resources.
    """
    return {
        "alertmanager": {"enabled": False},
        "kube-state-metrics": {"enabled": False},
        "prometheus-node-exporter": {"enabled": False},
        "prometheus-pushgateway": {"enabled": False},
        "server": {
            "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
            "retention": "6h",
            "persistentVolume": {"enabled": False},
            "resources": {
                "requests": {"cpu": "100m", "memory": "256Mi"},
                "limits": {"memory": "1Gi"},
            },
        },
    }


def metrics_server_values() -> dict[str, Any]:
    """kind's kubelets serve self-signed certificates; metrics-server must accept them there."""
    return {"args": ["--kubelet-insecure-tls"]}


class Monitoring(pulumi.ComponentResource):
    """Prometheus Adapter release (plus dev-only Prometheus and metrics-server releases).

    helm.v3.Release (not helm.v4.Chart): `pulumi preview` shows a readable diff of the values,
    and Helm upgrades atomically and rolls back a failed upgrade by itself.
    """

    prometheus_url: pulumi.Output[str]
    adapter: Release | None

    def __init__(
        self,
        name: str,
        settings: MonitoringSettings,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("uninlu:infra:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        namespace = settings.namespace
        releases: list[Release] = []

        if settings.install_metrics_server:
            releases.append(
                Release(
                    f"{name}-metrics-server",
                    name=METRICS_SERVER_CHART,
                    chart=METRICS_SERVER_CHART,
                    version=METRICS_SERVER_VERSION,
                    repository_opts=RepositoryOptsArgs(repo=METRICS_SERVER_REPO),
                    namespace="kube-system",
                    values=metrics_server_values(),
                    atomic=True,
                    opts=child,
                )
            )

        prometheus: Release | None = None
        if settings.install_prometheus:
            prometheus = Release(
                f"{name}-prometheus",
                name=PROMETHEUS_RELEASE,
                chart=PROMETHEUS_CHART,
                version=PROMETHEUS_VERSION,
                repository_opts=RepositoryOptsArgs(repo=COMMUNITY_REPO),
                namespace=namespace,
                create_namespace=True,
                values=prometheus_values(),
                atomic=True,
                opts=child,
            )
            releases.append(prometheus)
            url = IN_CLUSTER_PROMETHEUS_URL.format(release=PROMETHEUS_RELEASE, namespace=namespace)
            port = IN_CLUSTER_PROMETHEUS_PORT
        else:
            url = settings.prometheus_url or ""
            port = settings.prometheus_port
        self.prometheus_url = pulumi.Output.from_input(f"{url}:{port}" if url else "")

        self.adapter = None
        if settings.install_adapter:
            self.adapter = Release(
                f"{name}-adapter",
                name=ADAPTER_CHART,
                chart=ADAPTER_CHART,
                version=ADAPTER_VERSION,
                repository_opts=RepositoryOptsArgs(repo=COMMUNITY_REPO),
                namespace=namespace,
                create_namespace=True,
                values=adapter_values(url, port),
                atomic=True,
                opts=pulumi.ResourceOptions(
                    parent=self, depends_on=[prometheus] if prometheus else None
                ),
            )
            releases.append(self.adapter)

        self.releases = releases
        self.register_outputs(
            {
                "prometheusUrl": self.prometheus_url,
                "releases": [release.name for release in releases],
            }
        )
