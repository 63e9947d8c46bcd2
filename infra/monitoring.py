"""The metrics pipeline the autoscaler needs: the Prometheus Adapter (engine hpa) or KEDA (engine
keda), plus Prometheus and metrics-server on laptops.

Both engines scale on the same signal, defined once here: the rate over RATE_WINDOW of the app's
`uninlu_predict_texts_total` counter (texts in predict calls, every status) on the predict
routes. The adapter serves it per pod, as the Pods metric `uninlu_predict_texts_per_second` of
the custom metrics API (predict_texts_rule); KEDA's prometheus trigger reads the Deployment's
total (deployment_texts_query), and its HPA divides that by the pods (an External metric with an
AverageValue target). Chart versions and the adapter's image are pinned, so a `pulumi up` never
picks up an upstream change unannounced.
"""

from __future__ import annotations

import re
from typing import Any

import pulumi
from pulumi_kubernetes.helm.v3 import Release, RepositoryOptsArgs

from app.contract.metrics import PREDICT_ROUTES, PREDICT_TEXTS_METRIC, PREDICT_TEXTS_TOTAL
from infra.config import Monitoring as MonitoringSettings
from infra.config import Settings

COMMUNITY_REPO = "https://prometheus-community.github.io/helm-charts"
ADAPTER_CHART = "prometheus-adapter"
ADAPTER_VERSION = "5.3.0"
# The chart's default image is its appVersion; pinned here too, so a chart bump cannot change the
# adapter unannounced. v0.12.0 (2024-05) is the adapter's last release (docs/stack-config.md).
ADAPTER_IMAGE = "registry.k8s.io/prometheus-adapter/prometheus-adapter"
ADAPTER_IMAGE_TAG = "v0.12.0"
# KEDA (kedacore/charts keda/Chart.yaml at v2.20.2: chart and appVersion 2.20.2), in the namespace
# its README installs it to. Its chart installs the CRDs with the release.
KEDA_REPO = "https://kedacore.github.io/charts"
KEDA_CHART = "keda"
KEDA_VERSION = "2.20.2"
KEDA_NAMESPACE = "keda"
KEDA_RELEASE = "keda"
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


def _texts_rate(series: str, matchers: str) -> str:
    """The per-series rate of texts offered on the predict routes, every status: what both
    engines scale on (refused load too, so a pod answering 429 still asks for more pods)."""
    routes = f'route=~"{predict_route_regex()}"'
    return f"rate({series}{{{matchers},{routes}}}[{RATE_WINDOW}])"


def deployment_pods_regex(deployment: str) -> str:
    """The names of a Deployment's pods, `<deployment>-<pod-template-hash>-<suffix>`
    (kubernetes/kubernetes pkg/controller/deployment and replicaset name them so): not those of
    another Deployment whose name merely starts the same (`uninlu-canary-...`)."""
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", deployment):
        raise ValueError(f"deployment name {deployment!r} would need PromQL regex escaping")
    return f"{deployment}-[a-z0-9]+-[a-z0-9]+"


def predict_texts_rule() -> dict[str, Any]:
    """The adapter rule (prometheus-adapter config format) for the HPA's texts-per-second metric:
    the per-pod rate of texts offered on the predict routes, whatever the status, so load that is
    being refused (429) still asks for more pods.

    The route filter is repeated in metricsQuery: seriesQuery only selects which series the
    adapter discovers; the query it runs for the HPA gets just namespace/pod matchers from
    <<.LabelMatchers>>.
    """
    routes = f'route=~"{predict_route_regex()}"'
    per_series = _texts_rate("<<.Series>>", "<<.LabelMatchers>>")
    return {
        "seriesQuery": f'{PREDICT_TEXTS_TOTAL}{{{routes},namespace!="",pod!=""}}',
        "resources": {
            "overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
        },
        "name": {"matches": f"^{PREDICT_TEXTS_TOTAL}$", "as": PREDICT_TEXTS_METRIC},
        "metricsQuery": f"sum({per_series}) by (<<.GroupBy>>)",
    }


def deployment_texts_query(namespace: str, deployment: str) -> str:
    """The query of KEDA's prometheus trigger: the texts per second offered to the Deployment,
    all its pods together, as one element (the scaler refuses a result of several).

    The same rate as the adapter rule's, summed over the pods the rule would list one by one: the
    HPA KEDA owns divides it by the current replicas (an External metric with an AverageValue
    target: kubernetes/kubernetes pkg/controller/podautoscaler/replica_calculator.go,
    GetExternalPerPodMetricReplicas), which is the average the adapter's per-pod values give.
    """
    pods = f'namespace="{namespace}",pod=~"{deployment_pods_regex(deployment)}"'
    return f"sum({_texts_rate(PREDICT_TEXTS_TOTAL, pods)})"


def prometheus_endpoint(settings: MonitoringSettings) -> tuple[str, int]:
    """The Prometheus the adapter and KEDA query: the dev one this program installs, or the
    stack's prometheusUrl and port ("" when there is none)."""
    if settings.install_prometheus:
        url = IN_CLUSTER_PROMETHEUS_URL.format(
            release=PROMETHEUS_RELEASE, namespace=settings.namespace
        )
        return url, IN_CLUSTER_PROMETHEUS_PORT
    return settings.prometheus_url or "", settings.prometheus_port


def prometheus_address(settings: MonitoringSettings) -> str:
    """The endpoint as one URL (KEDA's serverAddress, the stack output prometheusUrl)."""
    url, port = prometheus_endpoint(settings)
    return f"{url}:{port}" if url else ""


def adapter_values(prometheus_url: str, prometheus_port: int) -> dict[str, Any]:
    """Values for the prometheus-adapter chart: only our rule, so it lists no unrelated series.

    `rules.external` stays empty: the chart then renders no external metrics APIService
    (charts/prometheus-adapter templates/external-metrics-apiservice.yaml), which KEDA owns
    wherever it runs.
    """
    return {
        "image": {"repository": ADAPTER_IMAGE, "tag": ADAPTER_IMAGE_TAG},
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


def keda_values() -> dict[str, Any]:
    """KEDA as its chart installs it, with the two parts this project relies on spelled out: the
    metrics server behind the external metrics APIService, and the admission webhooks that
    refuse a second autoscaler for a Deployment (and let a ScaledObject take over an HPA)."""
    return {
        "crds": {"install": True},
        "metricsServer": {"enabled": True},
        "webhooks": {"enabled": True},
    }


class Monitoring(pulumi.ComponentResource):
    """The Prometheus Adapter and KEDA releases the stack's engine needs (plus dev-only
    Prometheus and metrics-server releases).

    helm.v3.Release (not helm.v4.Chart): `pulumi preview` shows a readable diff of the values,
    and Helm upgrades atomically and rolls back a failed upgrade by itself.
    """

    prometheus_url: pulumi.Output[str]
    adapter: Release | None
    keda: Release | None

    def __init__(
        self,
        name: str,
        stack_settings: Settings,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("uninlu:infra:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        settings = stack_settings.monitoring
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
        url, port = prometheus_endpoint(settings)
        self.prometheus_url = pulumi.Output.from_input(prometheus_address(settings))

        self.adapter = None
        if stack_settings.adapter_installed:
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

        # With installKeda false, engine keda expects the cluster's own KEDA (and registers no
        # second owner of v1beta1.external.metrics.k8s.io: the adapter above serves none).
        self.keda = None
        if settings.install_keda:
            self.keda = Release(
                f"{name}-keda",
                name=KEDA_RELEASE,
                chart=KEDA_CHART,
                version=KEDA_VERSION,
                repository_opts=RepositoryOptsArgs(repo=KEDA_REPO),
                namespace=KEDA_NAMESPACE,
                create_namespace=True,
                values=keda_values(),
                atomic=True,
                opts=child,
            )
            releases.append(self.keda)

        self.releases = releases
        self.register_outputs(
            {
                "prometheusUrl": self.prometheus_url,
                "releases": [release.name for release in releases],
            }
        )
