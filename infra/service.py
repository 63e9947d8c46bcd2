"""The model service: its namespace, the registry pull secret, and the infra/chart Helm release.

Chart values are computed from StackConfig by one pure function, so `pulumi preview` shows a
config edit as exactly the values it changes. Secrets never go into the values (a secret inside
makes Pulumi mark the whole values object secret and the preview diff unreadable): the registry
credentials become a separate kubernetes.io/dockerconfigjson Secret, referenced by name.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.helm.v3 import Release

from app.contract import shutdown
from infra.config import Settings, StackConfig, has_registry_auth
from infra.monitoring import deployment_texts_query, prometheus_address

CHART_PATH = "./infra/chart"
RELEASE_NAME = "uninlu"
# Fixed resource names (fullnameOverride) so the Service name and URL are known before install.
FULLNAME = "uninlu"
PULL_SECRET_NAME = "uninlu-registry"
# Margin over the model-load budget for one pod: image pull and scheduling come first.
RELEASE_TIMEOUT_MARGIN_SECONDS = 180
POD_SECURITY_VERSION = "v1.29"
# The pod's preStop sleep: endpoints and kube-proxy stop routing to it before SIGTERM.
PRE_STOP_SLEEP_SECONDS = 5
# A rollout surges this share of the pods at a time (never fewer ready pods: maxUnavailable 0), so
# it takes at most 100 / 25 = 4 waves of new pods, whatever maxReplicas is.
ROLLOUT_SURGE_PERCENT = 25


def pod_start_budget(settings: Settings) -> int:
    """Seconds one new pod may take from scheduling to ready: the Deployment's
    progressDeadlineSeconds (a wave that makes no progress this long is failed)."""
    return settings.probes.model_load_timeout_seconds + RELEASE_TIMEOUT_MARGIN_SECONDS


def rollout_waves(settings: Settings) -> int:
    pods = settings.autoscaling.max_replicas if settings.autoscaling.enabled else settings.replicas
    return min(pods, math.ceil(100 / ROLLOUT_SURGE_PERCENT))


def release_timeout(settings: Settings) -> int:
    """Seconds Helm waits for the rollout before `atomic` rolls it back: every wave's pull and
    model load in turn, so a healthy rollout is never rolled back. Bounded by the surge share,
    not by maxReplicas, so a CI job's timeout can cover it and editing maxReplicas changes only
    maxReplicas in a preview."""
    return rollout_waves(settings) * pod_start_budget(settings)


def chart_fingerprint(chart_dir: Path) -> str:
    """sha256 over every file of the chart (relative path and content).

    helm.v3.Release decides to upgrade from its inputs only: chart, version (taken from
    Chart.yaml in Check) and values (pulumi-kubernetes provider/pkg/provider/helm_release.go,
    Check and Diff). A template edit changes none of them, so it would preview as no change and
    never reach the cluster. Passed as a value, this makes it a one-value diff that rolls the pods
    (the checksum/chart pod annotation).
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in chart_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(chart_dir).as_posix()
        digest.update(f"{len(relative)}:{relative}:{path.stat().st_size}:".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _shutdown_values(settings: Settings) -> tuple[int, dict[str, int]]:
    """server.gracefulShutdownSeconds and the pod lifecycle it needs, from one budget
    (app/contract/shutdown.py): the grace period covers the preStop sleep and the whole budget."""
    budget = settings.server.graceful_shutdown_seconds
    if budget is None:
        budget = shutdown.DEFAULT_GRACEFUL_SHUTDOWN_SECONDS
    return budget, {
        "preStopSleepSeconds": PRE_STOP_SLEEP_SECONDS,
        "terminationGracePeriodSeconds": shutdown.termination_grace_period(
            budget, PRE_STOP_SLEEP_SECONDS
        ),
    }


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _autoscaling_values(settings: Settings) -> dict[str, Any]:
    """The chart's autoscaling values: the engine, the CPU metric the stack's Kubernetes allows,
    and for engine keda where KEDA reads the texts rate (the stack's Prometheus) and how (the
    query infra/monitoring.py defines beside the adapter rule)."""
    scaling = settings.autoscaling
    texts = scaling.target_texts_per_second_per_pod
    values: dict[str, Any] = {
        "enabled": scaling.enabled,
        "engine": scaling.engine,
        "cpuMetric": "ContainerResource" if settings.container_cpu_metric else "Resource",
        "minReplicas": scaling.min_replicas,
        "maxReplicas": scaling.max_replicas,
        "targetCPUUtilizationPercentage": scaling.target_cpu_utilization_percentage,
        "textsPerSecondMetric": texts is not None,
    }
    if texts is not None:
        values["targetTextsPerSecondPerPod"] = texts
    if scaling.engine == "keda" and texts is not None:
        values["keda"] = {
            "serverAddress": prometheus_address(settings.monitoring),
            "query": deployment_texts_query(settings.namespace, FULLNAME),
            "fallbackReplicas": scaling.keda_fallback_replicas,
        }
    if scaling.behavior is not None:
        behavior = scaling.behavior.model_dump(by_alias=True, exclude_none=True)
        if behavior:
            values["behavior"] = behavior
    return values


def _pdb_values(settings: Settings) -> dict[str, Any]:
    pdb = settings.pdb
    values: dict[str, Any] = {"enabled": pdb.enabled}
    if pdb.enabled:
        values["maxUnavailable"] = pdb.max_unavailable
        values["minAvailable"] = pdb.min_available
    return values


def _metrics_values(settings: Settings) -> dict[str, Any]:
    monitoring = settings.monitoring
    service_monitor: dict[str, Any] = {"enabled": monitoring.service_monitor}
    if monitoring.service_monitor_labels:
        service_monitor["labels"] = dict(monitoring.service_monitor_labels)
    alerts = monitoring.alerts
    prometheus_rule: dict[str, Any] = {"enabled": monitoring.prometheus_rule}
    if monitoring.prometheus_rule:
        prometheus_rule |= {
            "labels": dict(monitoring.prometheus_rule_labels),
            "latencySloSeconds": settings.latency_slo_seconds,
            "errorRatio": alerts.error_ratio,
            "overloadRatio": alerts.overload_ratio,
            "restartsPerHour": alerts.restarts_per_hour,
        }
        if alerts.runbook_url:
            prometheus_rule["runbookUrl"] = alerts.runbook_url
    # A ServiceMonitor scrapes the pods already; scrape annotations would make a second job do it.
    return {
        "scrapeAnnotations": not monitoring.service_monitor,
        "serviceMonitor": service_monitor,
        "prometheusRule": prometheus_rule,
        "grafanaDashboard": {"enabled": monitoring.grafana_dashboard},
    }


def _ingress_values(settings: Settings) -> dict[str, Any]:
    ingress = settings.ingress
    if not ingress.enabled:
        return {"enabled": False}
    values: dict[str, Any] = {
        "enabled": True,
        "className": ingress.class_name,
        "hosts": [{"host": ingress.host, "paths": [{"path": "/", "pathType": "Prefix"}]}],
    }
    if ingress.tls_secret_name:
        values["tls"] = [{"secretName": ingress.tls_secret_name, "hosts": [ingress.host]}]
    return values


def chart_values(
    settings: Settings,
    image_repository: str,
    image_digest: pulumi.Input[str],
    pull_secret: str | None,
    fingerprint: str = "",
) -> dict[str, Any]:
    """The infra/chart values for this stack: plain data except the digest, and no secrets.

    The digest may be an Output: nested in the dict it stays the only unknown value while an
    image is being rebuilt, and the rest of the values still diff readably in a preview.
    """
    values: dict[str, Any] = {
        "fullnameOverride": FULLNAME,
        "image": {"repository": image_repository, "digest": image_digest},
        "imagePullSecrets": [{"name": pull_secret}] if pull_secret else [],
        "replicaCount": settings.replicas,
        "autoscaling": _autoscaling_values(settings),
        "pdb": _pdb_values(settings),
        "probes": {"modelLoadTimeoutSeconds": settings.probes.model_load_timeout_seconds},
        "rollingUpdate": {"maxSurge": f"{ROLLOUT_SURGE_PERCENT}%", "maxUnavailable": 0},
        "progressDeadlineSeconds": pod_start_budget(settings),
        "chartFingerprint": fingerprint,
        "service": {"type": settings.service.type, "port": settings.service.port},
        "ingress": _ingress_values(settings),
        "metrics": _metrics_values(settings),
    }
    graceful_shutdown, values["lifecycle"] = _shutdown_values(settings)
    server = settings.server.model_dump(by_alias=True, exclude_none=True)
    values["server"] = server | {"gracefulShutdownSeconds": graceful_shutdown}
    if settings.resources is not None:
        values["resources"] = settings.resources.model_dump(by_alias=True, exclude_none=True)
    return values


def dockerconfigjson(registry: str, username: str, password: str) -> str:
    """The body of a kubernetes.io/dockerconfigjson Secret for one registry."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    auths = {registry: {"username": username, "password": password, "auth": token}}
    return json.dumps({"auths": auths})


def service_url(namespace: str, port: int) -> str:
    return f"http://{FULLNAME}.{namespace}.svc.cluster.local:{port}"


class ModelService(pulumi.ComponentResource):
    """Namespace + pull secret + the chart release, in that order."""

    namespace: pulumi.Output[str]
    service_name: pulumi.Output[str]
    url: pulumi.Output[str]
    release: Release

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        image_repository: str,
        image_digest: pulumi.Input[str],
        after: list[pulumi.Resource] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """`after`: resources the release must wait for (the metrics pipeline). Passed to the
        release itself, because a component's depends_on does not hold back its children."""
        super().__init__("uninlu:infra:ModelService", name, None, opts)
        settings = cfg.settings
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=settings.namespace,
                # The chart's pods are hardened to the "restricted" Pod Security Standard,
                # pinned to the policy of the oldest Kubernetes the chart supports (Chart.yaml
                # kubeVersion): a cluster upgrade cannot tighten it under running pods unannounced.
                labels={
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": POD_SECURITY_VERSION,
                    "pod-security.kubernetes.io/warn": "restricted",
                    "pod-security.kubernetes.io/warn-version": POD_SECURITY_VERSION,
                },
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        namespace_name = namespace.metadata.apply(lambda meta: meta.name)

        depends: list[pulumi.Resource] = [namespace, *(after or [])]
        pull_secret = None
        if has_registry_auth(cfg):
            assert settings.image.username is not None and cfg.registry_password is not None
            registry, username = settings.image.registry, settings.image.username
            secret = k8s.core.v1.Secret(
                f"{name}-registry",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=PULL_SECRET_NAME, namespace=namespace_name
                ),
                type="kubernetes.io/dockerconfigjson",
                string_data={
                    ".dockerconfigjson": pulumi.Output.secret(
                        cfg.registry_password.apply(
                            lambda password: dockerconfigjson(registry, username, password)
                        )
                    )
                },
                opts=pulumi.ResourceOptions(parent=self),
            )
            depends.append(secret)
            pull_secret = PULL_SECRET_NAME

        values = chart_values(
            settings,
            image_repository,
            image_digest,
            pull_secret,
            fingerprint=chart_fingerprint(Path(CHART_PATH)),
        )
        # atomic: a failed upgrade (pods never ready within the model-load budget) is rolled back
        # by Helm, so the previous version keeps serving.
        self.release = Release(
            name,
            name=RELEASE_NAME,
            chart=CHART_PATH,
            namespace=namespace_name,
            values=values,
            atomic=True,
            cleanup_on_fail=True,
            timeout=release_timeout(settings),
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends),
        )
        # Derived from the release's outputs, so they resolve once the release exists.
        self.namespace = self.release.namespace.apply(lambda ns: ns or settings.namespace)
        self.service_name = self.release.name.apply(lambda _: FULLNAME)
        self.url = self.namespace.apply(lambda ns: service_url(ns, settings.service.port))
        self.register_outputs(
            {"namespace": self.namespace, "serviceName": self.service_name, "url": self.url}
        )
