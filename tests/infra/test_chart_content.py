"""The content of the rendered chart the service depends on, for the default and the
production-like value sets (chart_cases.py): probes, pod security, shutdown, HPA, PDB, the
server's settings, scheduling, the model's source, monitoring and the notes."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

import pytest
import yaml
from chart_cases import DIGEST, NAMESPACE, PRODUCTION, VALUE_SETS, pod_spec, server_container

from app.contract import shutdown
from app.contract.metrics import PREDICT_TEXTS_METRIC
from app.serving.settings import Settings
from infra.chart_render import CHART_DIR, find, render_chart, render_files, validate_manifests


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request) -> tuple[str, list[dict]]:
    name = request.param
    return name, render_chart(VALUE_SETS[name], name="nlu", namespace=NAMESPACE)


def test_probes_paths_and_startup_budget_covers_model_loading(rendered):
    name, manifests = rendered
    server = server_container(manifests)
    startup, readiness, liveness = (
        server[k] for k in ("startupProbe", "readinessProbe", "livenessProbe")
    )
    assert startup["httpGet"] == {"path": "/ready", "port": "http"}
    assert readiness["httpGet"] == {"path": "/ready", "port": "http"}
    assert liveness["httpGet"] == {"path": "/health", "port": "http"}
    load_timeout = {"default": 300, "production": 601}[name]
    budget = startup["failureThreshold"] * startup["periodSeconds"]
    assert load_timeout <= budget < load_timeout + startup["periodSeconds"]
    for probe in (startup, readiness, liveness):
        assert "initialDelaySeconds" not in probe
    port = server["ports"][0]
    assert (port["name"], port["containerPort"]) == ("http", 7860)


def test_pod_security(rendered):
    _, manifests = rendered
    pod = pod_spec(manifests)
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert find(manifests, "ServiceAccount")["automountServiceAccountToken"] is False
    for container in pod["containers"] + pod.get("initContainers", []):
        sc = container["securityContext"]
        assert (sc["runAsUser"], sc["runAsGroup"], sc["runAsNonRoot"]) == (1001, 1001, True)
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert container["resources"]["limits"]["memory"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}} in pod["volumes"]


def test_graceful_termination_outlasts_prestop_and_drain(rendered):
    _, manifests = rendered
    pod, server = pod_spec(manifests), server_container(manifests)
    settings = find(manifests, "ConfigMap", name="nlu-uninlu")["data"]
    sleep = int(server["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert sleep > 0
    assert pod["terminationGracePeriodSeconds"] > sleep + int(settings["GRACEFUL_SHUTDOWN_SECONDS"])


@pytest.mark.parametrize(
    "server",
    [{}, {"gracefulShutdownSeconds": 90}, {"extraEnv": {"DRAIN_DELAY_SECONDS": "12"}}],
    ids=["defaults", "longer-budget", "drain-delay"],
)
def test_the_servers_whole_shutdown_fits_the_charts_grace_period(server):
    """The server's own split of its budget (drain delay + in-flight requests + batcher close,
    app/contract/shutdown.py, read from the rendered ConfigMap as the pod would) after the preStop
    sleep
    ends before the kubelet's SIGKILL."""
    manifests = render_chart({"server": server})
    settings = Settings.from_env(find(manifests, "ConfigMap")["data"])
    budget = settings.shutdown_budget
    sleep = int(server_container(manifests)["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace = pod_spec(manifests)["terminationGracePeriodSeconds"]
    assert budget.total == settings.graceful_shutdown_seconds
    assert sleep + budget.total + shutdown.EXIT_MARGIN_SECONDS <= grace
    assert grace == shutdown.termination_grace_period(settings.graceful_shutdown_seconds, sleep)


def test_hpa_metrics_and_behaviour(rendered):
    name, manifests = rendered
    hpa = find(manifests, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (
        hpa["spec"]["scaleTargetRef"]["name"] == find(manifests, "Deployment")["metadata"]["name"]
    )
    cpu, texts = hpa["spec"]["metrics"]
    # The server container's CPU alone (ContainerResource), what the capacity was measured on.
    assert cpu["type"] == "ContainerResource"
    assert cpu["containerResource"] == {
        "name": "cpu",
        "container": server_container(manifests)["name"],
        "target": {"type": "Utilization", "averageUtilization": 70},
    }
    assert texts["type"] == "Pods"
    assert texts["pods"]["metric"]["name"] == PREDICT_TEXTS_METRIC
    expected_target = {"default": "4", "production": "2500m"}[name]
    assert texts["pods"]["target"] == {"type": "AverageValue", "averageValue": expected_target}
    behavior = hpa["spec"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert {p["type"] for p in behavior["scaleUp"]["policies"]} == {"Pods", "Percent"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == {
        "default": (2, 6),
        "production": (3, 12),
    }[name]


def test_no_replicas_field_while_the_hpa_owns_the_count(rendered):
    _, manifests = rendered
    assert "replicas" not in find(manifests, "Deployment")["spec"]
    fixed = render_chart({"autoscaling": {"enabled": False}, "replicaCount": 3})
    assert find(fixed, "Deployment")["spec"]["replicas"] == 3
    assert find(fixed, "HorizontalPodAutoscaler") is None


def test_rps_metric_can_be_left_to_cpu_alone():
    hpa = find(
        render_chart({"autoscaling": {"textsPerSecondMetric": False}}), "HorizontalPodAutoscaler"
    )
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["ContainerResource"]


def test_pdb_allows_drains(rendered):
    name, manifests = rendered
    pdb = find(manifests, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert pdb["spec"]["maxUnavailable"] == {"default": 1, "production": "25%"}[name]
    assert "minAvailable" not in pdb["spec"]
    selector = find(manifests, "Deployment")["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"] == selector


def test_configmap_carries_valid_server_settings(rendered):
    _, manifests = rendered
    config = find(manifests, "ConfigMap", name="nlu-uninlu")
    design_settings = {
        "MODEL_PATH", "PORT", "WARMUP_TEXT", "DEVICE", "TORCH_THREADS",
        "OMP_WAIT_POLICY",
        "INTRA_OP_SPINNING", "MAX_TEXT_CHARS",
        "MAX_SCHEMA_NODES", "MAX_SCHEMA_DEPTH", "MAX_BATCH_TOKENS", "BATCH_WAIT_MS", "MAX_QUEUE",
        "LOG_LEVEL", "LOG_FORMAT", "GRACEFUL_SHUTDOWN_SECONDS", "REQUEST_TIMEOUT_SECONDS",
    }  # fmt: skip
    assert set(config["data"]) == design_settings
    settings = Settings.from_env(config["data"])  # the server accepts every value
    assert (settings.model_path, settings.port) == ("/models/uninlu", 7860)
    # Thread waits sleep: two threads keep working when a neighbour takes a core (issue 14).
    assert (settings.omp_wait_policy, settings.intra_op_spinning) == ("PASSIVE", False)
    server = server_container(manifests)
    assert server["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]


def test_request_timeout_cost_budget_and_round_budget_reach_the_server():
    values = {"requestTimeoutSeconds": 2.5, "maxRequestCost": 900, "roundBudgetMs": 120.5}
    config = find(render_chart({"server": values}), "ConfigMap")
    settings = Settings.from_env(config["data"])
    assert (settings.request_timeout_seconds, settings.max_request_cost) == (2.5, 900)
    assert settings.round_budget_ms == 120.5
    assert (
        Settings.from_env(find(render_chart({}), "ConfigMap")["data"]).request_timeout_seconds == 60
    )


def test_checksum_changes_only_with_the_settings():
    def checksum(values):
        pod = find(render_chart(values), "Deployment")["spec"]["template"]
        return pod["metadata"]["annotations"]["checksum/config"]

    base = checksum({})
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum({"server": {"maxQueue": 64}}) != base
    assert checksum({"server": {"extraEnv": {"DRAIN_DELAY_SECONDS": "3"}}}) != base
    assert checksum({"autoscaling": {"maxReplicas": 9}}) == base


def test_pod_scheduling_gpu_and_scrape_annotations():
    manifests = render_chart(PRODUCTION, name="nlu", namespace=NAMESPACE)
    pod, server = pod_spec(manifests), server_container(manifests)
    assert server["image"] == f"registry.example.com/ml/uninlu@{DIGEST}"
    assert server["imagePullPolicy"] == "Always"
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert server["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert server["resources"]["limits"]["memory"] == "8Gi"
    assert pod["nodeSelector"] == PRODUCTION["nodeSelector"]
    assert pod["tolerations"] == PRODUCTION["tolerations"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["whenUnsatisfiable"] == "DoNotSchedule"
    assert (
        spread["labelSelector"]["matchLabels"]
        == find(manifests, "Deployment")["spec"]["selector"]["matchLabels"]
    )
    annotations = find(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "7860"
    assert annotations["prometheus.io/path"] == "/metrics"


def test_default_image_is_addressed_by_app_version():
    server = server_container(render_chart({}))
    assert (
        server["image"]
        == "uninlu:" + yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["appVersion"]
    )
    assert [m["name"] for m in server["volumeMounts"]] == ["tmp"]  # the model is inside the image


def test_model_from_a_persistent_volume_claim():
    manifests = render_chart(
        {"model": {"source": "pvc", "pvc": {"claimName": "uninlu-model", "subPath": "v1"}}}
    )
    pod, server = pod_spec(manifests), server_container(manifests)
    assert {
        "name": "model",
        "persistentVolumeClaim": {"claimName": "uninlu-model", "readOnly": True},
    } in pod["volumes"]
    mount = next(m for m in server["volumeMounts"] if m["name"] == "model")
    assert mount == {
        "name": "model",
        "mountPath": "/models/uninlu",
        "readOnly": True,
        "subPath": "v1",
    }
    assert "initContainers" not in pod
    assert validate_manifests(manifests) == []


def test_model_downloaded_by_an_init_container():
    manifests = render_chart(PRODUCTION, name="nlu", namespace=NAMESPACE)
    pod = pod_spec(manifests)
    (init,) = pod["initContainers"]
    env = {e["name"]: e["value"] for e in init["env"]}
    assert json.loads(env["MODEL_FILES"]) == [
        "config.json",
        "configuration.json",
        "pytorch_model.bin",
        "vocab.txt",
    ]
    assert env["MODEL_BASE_URL"].startswith("https://")
    assert json.loads(env["MODEL_SHA256"]) == {"vocab.txt": "0" * 64}
    assert {"name": "model", "emptyDir": {"sizeLimit": "1Gi"}} in pod["volumes"]
    mount = next(m for m in server_container(manifests)["volumeMounts"] if m["name"] == "model")
    assert mount["readOnly"] is True
    egress = find(manifests, "NetworkPolicy")["spec"]["egress"]
    assert {"port": 443, "protocol": "TCP"} in [p for rule in egress for p in rule["ports"]]


def test_download_script_fetches_and_verifies(tmp_path):
    """Runs the initContainer's script against a local file:// source (no network)."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    target = tmp_path / "model"
    target.mkdir()
    init = pod_spec(render_chart({"model": {"source": "download"}}))["initContainers"][0]
    script = init["command"][-1]
    env = {
        "MODEL_BASE_URL": f"file://{source}/",
        "MODEL_PATH": str(target),
        "MODEL_FILES": '["vocab.txt"]',
    }
    good = {
        "MODEL_SHA256": json.dumps({"vocab.txt": hashlib.sha256(b"[PAD]\n[UNK]\n").hexdigest()})
    }
    run = subprocess.run(
        [sys.executable, "-c", script], env={**env, **good}, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert (target / "vocab.txt").read_text() == "[PAD]\n[UNK]\n"
    (target / "vocab.txt").unlink()
    bad = {"MODEL_SHA256": json.dumps({"vocab.txt": "0" * 64})}
    run = subprocess.run(
        [sys.executable, "-c", script], env={**env, **bad}, capture_output=True, text=True
    )
    assert run.returncode != 0 and "does not match" in run.stderr
    assert not (target / "vocab.txt").exists()


def test_service_monitor_network_policy_and_ingress():
    manifests = render_chart(PRODUCTION, name="nlu", namespace=NAMESPACE)
    selector = find(manifests, "Deployment")["spec"]["selector"]["matchLabels"]
    monitor = find(manifests, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"] == selector
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}
    ]
    service = find(manifests, "Service")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == selector
    policy = find(manifests, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == selector
    assert policy["spec"]["ingress"] == [
        {
            "ports": [{"port": "http", "protocol": "TCP"}],
            "from": PRODUCTION["networkPolicy"]["ingressFrom"],
        }
    ]
    ingress = find(manifests, "Ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend == {"service": {"name": service["metadata"]["name"], "port": {"name": "http"}}}
    assert ingress["spec"]["tls"] == PRODUCTION["ingress"]["tls"]
    # optional kinds stay off by default
    kinds = {m["kind"] for m in render_chart({})}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "Ingress"}


def test_notes_tell_how_to_reach_the_service():
    notes = render_files({}, name="nlu", namespace=NAMESPACE)["uninlu/templates/NOTES.txt"]
    assert f"kubectl -n {NAMESPACE} port-forward service/nlu-uninlu 8080:80" in notes
    assert PREDICT_TEXTS_METRIC in notes
