"""What the chart tests share: the two value sets every rendering test runs (the defaults and a
production-like GPU set) and accessors into the rendered Deployment."""

from __future__ import annotations

from infra.chart_render import find

DIGEST = "sha256:" + "4f" * 32
PRODUCTION = {
    "image": {"repository": "registry.example.com/ml/uninlu", "tag": "1.4.2", "digest": DIGEST},
    "imagePullSecrets": [{"name": "regcred"}],
    "autoscaling": {"minReplicas": 3, "maxReplicas": 12, "targetTextsPerSecondPerPod": 2.5},
    "pdb": {"maxUnavailable": "25%"},
    "resources": {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"cpu": "4", "memory": "8Gi"},
    },
    "extraResources": {"nvidia.com/gpu": 1},
    "server": {"device": "cuda", "logLevel": "WARNING", "torchThreads": 4},
    "probes": {"modelLoadTimeoutSeconds": 601, "startup": {"periodSeconds": 10}},
    "model": {"source": "download", "download": {"sha256": {"vocab.txt": "0" * 64}}},
    "service": {"port": 8080},
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "hosts": [{"host": "nlu.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
        "tls": [{"secretName": "nlu-tls", "hosts": ["nlu.example.com"]}],
    },
    "metrics": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
        "grafanaDashboard": {"enabled": True},
    },
    "networkPolicy": {
        "ingressFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
        ]
    },
    "nodeSelector": {"nvidia.com/gpu.present": "true"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "topologySpread": {"whenUnsatisfiable": "DoNotSchedule"},
    "priorityClassName": "inference-high",
}
VALUE_SETS = {"default": {}, "production": PRODUCTION}
NAMESPACE = "ml"


def pod_spec(manifests: list[dict]) -> dict:
    return find(manifests, "Deployment")["spec"]["template"]["spec"]


def server_container(manifests: list[dict]) -> dict:
    (server,) = [c for c in pod_spec(manifests)["containers"] if c["name"] == "server"]
    return server
