"""The stack's configuration (namespace `uninlu:`): the ONLY reader of pulumi.Config.

Every value is validated here, before any resource is registered, so a typo in a stack file
stops `pulumi preview` with one clear message naming the key and the file instead of a
half-applied deployment. The components take the typed StackConfig and never read config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pulumi
from pulumi.runtime import config as runtime_config
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from app.contract.metrics import LATENCY_BUCKETS
from infra.capacity.records import CAPACITY_FILE, recorded_capacity

NAMESPACE = "uninlu"
PASSWORD_KEY = "registryPassword"
DEFAULT_MODEL_ID = "iic/nlp_structbert_siamese-uninlu_chinese-base"
DEFAULT_TORCH_INDEX_URL = "https://download.pytorch.org/whl/cpu"

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Kubernetes quantities as the API accepts them: "500m", "1.5", "2Gi", "256M".
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"
_PERCENT_OR_COUNT = r"^[0-9]+%$"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
_CPU_UNITS = {"m": 0.001, "": 1.0, "k": 1e3}

Quantity = Annotated[str, Field(pattern=_QUANTITY)]

RUNTIMES = ("onnx", "onnx-int8", "torch")
# Removed values and keys: they stop the preview with what is accepted now, never a bare
# "unknown key" or a list of literals.
_REMOVED_RUNTIMES = {"torch-int8": ("the torch dynamic int8 backend", "onnx-int8")}
_REMOVED_SERVER_KEYS = {
    "threadTuning": "the server always runs torchThreads intra-op threads (what "
    "threadTuning: fixed did)",
    "sliceTokens": "scheduling rounds are bounded in time, not in model tokens: set "
    "roundBudgetMs (ROUND_BUDGET_MS, milliseconds of backend work per round) instead",
}


class ConfigError(pulumi.RunError):
    """Invalid stack configuration. RunError makes the CLI print the message without a traceback."""


class _Model(BaseModel):
    """camelCase keys as in the stack YAML; unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class ModelSource(_Model):
    """Where the image build gets the checkpoint: ModelScope (id + revision) or a local dir."""

    source: Literal["modelscope", "local"] = "modelscope"
    id: str = Field(DEFAULT_MODEL_ID, min_length=1)
    revision: str = Field("v1.0", min_length=1)
    path: str | None = None

    @model_validator(mode="after")
    def _check_source(self) -> ModelSource:
        if self.source == "local" and not self.path:
            raise ValueError("model.path is required when model.source is 'local'")
        if self.source == "modelscope" and self.path:
            raise ValueError("model.path is only used with model.source 'local'")
        return self


class ImageSettings(_Model):
    """Image build and push: registry, repository and tag, credentials user, cache and platforms.

    There is no "don't push" switch: the Deployment is pinned to the pushed digest.
    """

    registry: str = Field(min_length=1)
    repository: str = Field("uninlu", pattern=r"^[a-z0-9]+([._/-][a-z0-9]+)*$")
    tag: str = Field("latest", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
    platforms: list[Literal["linux/amd64", "linux/arm64"]] = Field(
        default_factory=lambda: ["linux/amd64"], min_length=1
    )
    cache: bool = True
    build_on_preview: bool = False
    # false: build nothing; release the digest that `tag` points at now (pushed and tested by
    # another stack), resolved in the registry at deploy time. Promotion without a rebuild.
    build: bool = True
    # An existing buildx builder (docker-container, kubernetes or remote driver) to build with;
    # None lets pulumi-docker-build pick or create one. The dev stack names the builder that
    # `make kind-up` creates on the host network, so the push reaches localhost:5001.
    builder: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    # Which runtime the image carries: ONNX Runtime without torch (lean; fp32 gives the torch
    # outputs exactly, int8 is ~4x faster on CPU), or torch (needed for GPU nodes).
    runtime: Literal["onnx", "onnx-int8", "torch"] = "onnx"
    torch_index_url: str = Field(DEFAULT_TORCH_INDEX_URL, pattern=r"^https?://")
    username: str | None = Field(None, min_length=1)

    @field_validator("runtime", mode="before")
    @classmethod
    def _reject_removed_runtimes(cls, value: Any) -> Any:
        if isinstance(value, str) and value in _REMOVED_RUNTIMES:
            what, instead = _REMOVED_RUNTIMES[value]
            raise ValueError(
                f"{value} was removed ({what}): use {instead}; accepted: {', '.join(RUNTIMES)}"
            )
        return value

    @property
    def name(self) -> str:
        """registry/repository, without tag or digest."""
        return f"{self.registry}/{self.repository}"


class Resources(_Model):
    requests: dict[Literal["cpu", "memory", "ephemeral-storage"], Quantity] | None = None
    limits: dict[Literal["cpu", "memory", "ephemeral-storage"], Quantity] | None = None


class ScalingPolicy(_Model):
    type: Literal["Pods", "Percent"]
    value: int = Field(gt=0)
    period_seconds: int = Field(gt=0, le=1800)


class ScalingRules(_Model):
    """One direction of the HPA's behavior (autoscaling/v2 HPAScalingRules)."""

    stabilization_window_seconds: int | None = Field(None, ge=0, le=3600)
    select_policy: Literal["Max", "Min", "Disabled"] | None = None
    policies: list[ScalingPolicy] | None = Field(None, min_length=1)
    # The usage ratio's dead band in this direction (KEP-4951, beta and on by default from
    # Kubernetes 1.35): none is the controller's --horizontal-pod-autoscaler-tolerance (0.1).
    # Below 1: a scale-down tolerance of 1 would never let this metric remove a pod.
    tolerance: float | None = Field(None, ge=0, lt=1)


class Behavior(_Model):
    scale_up: ScalingRules | None = None
    scale_down: ScalingRules | None = None


# Renamed keys: the old name stops the preview with the new one, never a silent "unknown key".
_RENAMED_AUTOSCALING_KEYS = {
    "targetRequestsPerSecondPerPod": (
        "targetTextsPerSecondPerPod",
        "the metric now counts texts (a /predict/batch of n items is n), not HTTP calls",
    ),
}


class Autoscaling(_Model):
    """Autoscaling on CPU and on predict texts per second per pod, by one of two engines: the
    chart's HPA on the Prometheus Adapter's custom metric (hpa), or a KEDA ScaledObject whose
    HPA reads the same rate from Prometheus through KEDA's external metrics (keda)."""

    enabled: bool = True
    engine: Literal["hpa", "keda"] = "hpa"
    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(3, ge=1)
    target_cpu_utilization_percentage: int = Field(
        70, ge=1, le=100, alias="targetCPUUtilizationPercentage"
    )
    # null turns the texts-per-second metric off (CPU only).
    target_texts_per_second_per_pod: float | None = Field(4, gt=0)
    behavior: Behavior | None = None
    # keda: the replicas KEDA asks for while Prometheus cannot be read (3 failed reads in a row),
    # or the current count if that is higher. Default minReplicas: hold the current count, as
    # the hpa engine does when its texts metric fails (CPU still adds pods).
    fallback_replicas: int | None = Field(None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _reject_renamed_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for old, (new, why) in _RENAMED_AUTOSCALING_KEYS.items():
                if old in data:
                    raise ValueError(
                        f"{old} was renamed to {new} ({why}); rename the key in the stack file"
                    )
        return data

    @model_validator(mode="after")
    def _check_bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must not exceed "
                f"maxReplicas ({self.max_replicas})"
            )
        if self.fallback_replicas is not None:
            if self.engine != "keda":
                raise ValueError(
                    "fallbackReplicas is KEDA's (engine: keda); the hpa engine has no fallback: "
                    "delete the key or set engine: keda"
                )
            if self.target_texts_per_second_per_pod is None:
                raise ValueError(
                    "fallbackReplicas is the fallback of KEDA's prometheus trigger, which "
                    "targetTextsPerSecondPerPod: null turns off (KEDA allows no fallback on cpu "
                    "alone): delete fallbackReplicas or set a texts target"
                )
            if not self.min_replicas <= self.fallback_replicas <= self.max_replicas:
                raise ValueError(
                    f"fallbackReplicas ({self.fallback_replicas}) must lie within minReplicas "
                    f"({self.min_replicas}) and maxReplicas ({self.max_replicas})"
                )
        return self

    @property
    def keda_fallback_replicas(self) -> int:
        return self.fallback_replicas if self.fallback_replicas is not None else self.min_replicas

    def tolerances(self) -> dict[str, float]:
        """The per-direction tolerances the stack sets ({"scaleUp": 0.05, ...}; {} = none)."""
        if self.behavior is None:
            return {}
        rules = {"scaleUp": self.behavior.scale_up, "scaleDown": self.behavior.scale_down}
        return {
            key: rule.tolerance
            for key, rule in rules.items()
            if rule is not None and rule.tolerance is not None
        }


DEFAULT_SLO_P95_MS = 1000


class Capacity(_Model):
    """The load the stack is sized for: its declared peak and its latency SLO. `make plan` turns
    them, with the measured capacity of one pod, into the autoscaling targets."""

    peak_texts_per_second: float | None = Field(None, gt=0)
    slo_p95_ms: int | None = Field(None, ge=1, le=600_000)

    @property
    def slo_ms(self) -> int:
        """The p95 latency objective, DEFAULT_SLO_P95_MS when the stack states none."""
        return self.slo_p95_ms if self.slo_p95_ms is not None else DEFAULT_SLO_P95_MS


class Pdb(_Model):
    enabled: bool = False
    max_unavailable: int | Annotated[str, Field(pattern=_PERCENT_OR_COUNT)] | None = 1
    min_available: int | Annotated[str, Field(pattern=_PERCENT_OR_COUNT)] | None = None


class Probes(_Model):
    """Budget for model load + warm-up before the kubelet gives up on a starting pod."""

    model_load_timeout_seconds: int = Field(300, ge=10, le=3600)


class Server(_Model):
    """Server settings (DESIGN.md §5) forwarded to the chart; unset keys keep the chart default."""

    device: Literal["auto", "cpu", "cuda"] | None = None
    torch_threads: int | None = Field(None, ge=1)
    omp_wait_policy: Literal["ACTIVE", "PASSIVE"] | None = None
    intra_op_spinning: bool | None = None
    max_text_chars: int | None = Field(None, ge=1)
    max_batch_tokens: int | None = Field(None, ge=1)
    batch_wait_ms: int | None = Field(None, ge=0)
    max_queue: int | None = Field(None, ge=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = None
    log_format: Literal["json", "text"] | None = None
    graceful_shutdown_seconds: int | None = Field(None, ge=0)
    request_timeout_seconds: float | None = Field(None, gt=0, le=3600)
    round_budget_ms: float | None = Field(None, gt=0, le=10_000)

    @model_validator(mode="before")
    @classmethod
    def _reject_removed_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, now in _REMOVED_SERVER_KEYS.items():
                if key in data:
                    raise ValueError(
                        f"{key} was removed: {now}; delete the key from the stack file"
                    )
        return data


class Alerts(_Model):
    """Alert thresholds of the chart's PrometheusRule; the latency SLO is capacity.sloP95Ms."""

    error_ratio: float = Field(0.01, gt=0, le=1)
    overload_ratio: float = Field(0.05, gt=0, le=1)
    restarts_per_hour: int = Field(3, ge=0)
    runbook_url: str | None = Field(None, pattern=r"^https?://[^\s#]+$")


class Monitoring(_Model):
    """Prometheus Adapter (engine hpa, unless managed elsewhere), KEDA (engine keda, where the
    cluster has none), and for laptops a small Prometheus and metrics-server."""

    namespace: str = Field("monitoring", pattern=_DNS_LABEL, max_length=63)
    # None: installed with engine hpa (its texts metric needs it), not with keda
    # (Settings.adapter_installed).
    install_adapter: bool | None = None
    install_keda: bool = False
    install_prometheus: bool = False
    install_metrics_server: bool = False
    prometheus_url: str | None = Field(None, pattern=r"^https?://[^\s:/]+(\.[^\s:/]+)*(/.*)?$")
    prometheus_port: int = Field(9090, ge=1, le=65535)
    service_monitor: bool = False
    service_monitor_labels: dict[str, str] = Field(default_factory=dict)
    # The chart's PrometheusRule (recording rules + alerts, docs/runbook.md) and its Grafana
    # dashboard ConfigMap: both need kube-prometheus-stack (operator CRDs, Grafana sidecar).
    prometheus_rule: bool = False
    prometheus_rule_labels: dict[str, str] = Field(default_factory=dict)
    grafana_dashboard: bool = False
    alerts: Alerts = Field(default_factory=Alerts)

    @model_validator(mode="after")
    def _check_prometheus(self) -> Monitoring:
        if self.install_prometheus and self.prometheus_url:
            raise ValueError(
                "set either installPrometheus (a small in-cluster Prometheus) or prometheusUrl "
                "(an existing one), not both"
            )
        return self

    @property
    def has_prometheus(self) -> bool:
        return self.install_prometheus or bool(self.prometheus_url)


class Service(_Model):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    port: int = Field(80, ge=1, le=65535)


class Ingress(_Model):
    enabled: bool = False
    class_name: str = ""
    host: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    tls_secret_name: str | None = Field(None, pattern=_DNS_LABEL)

    @model_validator(mode="after")
    def _check_host(self) -> Ingress:
        if self.enabled and not self.host:
            raise ValueError("ingress.host is required when ingress.enabled is true")
        return self


# Kubernetes minor versions that change what the chart renders (KEP-1610: ContainerResource
# metrics GA in 1.30; KEP-4951: HPA tolerances per direction beta, on by default, in 1.35).
OLDEST_KUBERNETES_MINOR = 29  # infra/chart/Chart.yaml kubeVersion
CONTAINER_RESOURCE_SINCE = 30
TOLERANCE_SINCE = 35


class Settings(_Model):
    """All plain (non-secret) keys of the `uninlu:` namespace."""

    namespace: str = Field("uninlu", pattern=_DNS_LABEL, max_length=63)
    # The oldest Kubernetes minor version the stack's cluster runs (control plane): what the
    # autoscaler may use. A string: YAML reads an unquoted 1.30 as the number 1.3.
    kubernetes_version: str = Field("1.30", pattern=r"^1\.[0-9]+$")
    image: ImageSettings
    model: ModelSource = Field(default_factory=ModelSource)
    resources: Resources | None = None
    replicas: int = Field(1, ge=1)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    capacity: Capacity = Field(default_factory=Capacity)
    pdb: Pdb = Field(default_factory=Pdb)
    probes: Probes = Field(default_factory=Probes)
    server: Server = Field(default_factory=Server)
    monitoring: Monitoring
    service: Service = Field(default_factory=Service)
    ingress: Ingress = Field(default_factory=Ingress)

    @field_validator("kubernetes_version", mode="before")
    @classmethod
    def _version_as_written(cls, value: Any) -> Any:
        if isinstance(value, float):  # the CLI's JSON of an unquoted YAML number
            return repr(value)
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        minor = self.kubernetes_minor
        if minor < OLDEST_KUBERNETES_MINOR:
            raise ValueError(
                f"kubernetesVersion: {self.kubernetes_version} is older than the chart supports "
                f'(1.{OLDEST_KUBERNETES_MINOR}); write the version quoted, e.g. "1.30": '
                "unquoted, YAML reads 1.30 as the number 1.3"
            )
        tolerances = self.autoscaling.tolerances()
        if tolerances and minor < TOLERANCE_SINCE:
            keys = ", ".join(f"behavior.{key}.tolerance" for key in tolerances)
            raise ValueError(
                f"autoscaling: {keys} needs kubernetesVersion 1.{TOLERANCE_SINCE} or later "
                f"(the HPA's per-direction tolerance, beta and on by default from 1.35; older "
                f"API servers drop the field silently); the stack declares "
                f"{self.kubernetes_version}: delete the tolerance or raise kubernetesVersion"
            )
        fewest = self.autoscaling.min_replicas if self.autoscaling.enabled else self.replicas
        if self.pdb.enabled and fewest < 2:
            raise ValueError(
                f"pdb.enabled: needs at least 2 replicas (here {fewest}): with one pod a "
                "PodDisruptionBudget blocks every node drain"
            )
        if self.server.device == "cuda" and self.image.runtime != "torch":
            raise ValueError(
                f"server.device: cuda needs image.runtime: torch (the {self.image.runtime} image "
                "has no CUDA)"
            )
        scaling, monitoring = self.autoscaling, self.monitoring
        wants_texts = scaling.enabled and scaling.target_texts_per_second_per_pod is not None
        if wants_texts and scaling.engine == "hpa" and not self.adapter_installed:
            raise ValueError(
                "autoscaling.targetTextsPerSecondPerPod: needs the Prometheus Adapter (engine "
                "hpa): set monitoring.installAdapter: true, or engine: keda, or "
                "targetTextsPerSecondPerPod: null"
            )
        if self.adapter_installed and not monitoring.has_prometheus:
            raise ValueError(
                "monitoring: the Prometheus Adapter needs a Prometheus: set prometheusUrl, "
                "or installPrometheus: true for a laptop cluster"
            )
        if wants_texts and scaling.engine == "keda" and not monitoring.has_prometheus:
            raise ValueError(
                "monitoring: KEDA's prometheus trigger (autoscaling.engine: keda) needs a "
                "Prometheus: set prometheusUrl, or installPrometheus: true for a laptop cluster"
            )
        if monitoring.install_keda and scaling.engine != "keda":
            raise ValueError(
                "monitoring.installKeda: KEDA is installed for autoscaling.engine: keda; with "
                "engine hpa nothing would use it: set engine: keda or installKeda: false"
            )
        slo_seconds = self.latency_slo_seconds
        if self.monitoring.prometheus_rule and slo_seconds not in LATENCY_BUCKETS:
            bounds = ", ".join(f"{bound * 1000:g}" for bound in LATENCY_BUCKETS)
            raise ValueError(
                f"capacity.sloP95Ms: the latency alerts count requests slower than the SLO, so it "
                f"must be a bucket bound of uninlu_request_duration_seconds ({bounds} ms); "
                f"got {slo_seconds * 1000:g}"
            )
        return self

    @property
    def kubernetes_minor(self) -> int:
        return int(self.kubernetes_version.split(".")[1])

    @property
    def adapter_installed(self) -> bool:
        """monitoring.installAdapter, by default true with engine hpa and false with keda."""
        if self.monitoring.install_adapter is not None:
            return self.monitoring.install_adapter
        return self.autoscaling.engine == "hpa"

    @property
    def container_cpu_metric(self) -> bool:
        """The HPA's CPU metric is the server container's own (ContainerResource, GA in 1.30)."""
        return self.kubernetes_minor >= CONTAINER_RESOURCE_SINCE

    @property
    def latency_slo_seconds(self) -> float:
        """The p95 latency objective (capacity.sloP95Ms, default 1 s), in seconds."""
        return self.capacity.slo_ms / 1000


@dataclass(frozen=True)
class StackConfig:
    """The validated settings plus the registry password, which stays a Pulumi secret Output."""

    stack: str
    settings: Settings
    registry_password: pulumi.Output[str] | None


def stack_file(stack: str) -> str:
    return f"Pulumi.{stack}.yaml"


_FIELDS = {field.alias or name: name for name, field in Settings.model_fields.items()}
_KNOWN_KEYS = set(_FIELDS) | {PASSWORD_KEY}


def _configured_keys() -> set[str]:
    """Keys of the `uninlu:` namespace: set in-process (tests) or passed by the language host."""
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    prefix = f"{NAMESPACE}:"
    return {key[len(prefix) :] for key in keys if key.startswith(prefix)}


def _is_secret(key: str) -> bool:
    full = f"{NAMESPACE}:{key}"
    return (
        runtime_config.is_config_secret(full) or full in runtime_config.get_config_secret_keys_env()
    )


def _decode(raw: str) -> Any:
    """Objects and lists arrive JSON-encoded; scalars arrive as strings (pydantic coerces them)."""
    if raw[:1] in "{[":
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def _describe(error: dict[str, Any]) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ").split(" or instance of ")[0]
    if not loc:  # a check across sections: its message starts with the key it is about
        return f"  {NAMESPACE}:{message}"
    key = f"{NAMESPACE}:{loc}"
    if error.get("ctx", {}).get("pattern") == _QUANTITY:
        message = "must be a Kubernetes quantity such as 500m, 2, 1536Mi or 3Gi"
    value = error.get("input")
    if error["type"] not in ("missing", "extra_forbidden") and not isinstance(value, dict | list):
        message += f" (got {value!r})"
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    return f"  {key}: {message}"


def load_stack_config() -> StackConfig:
    """Read and validate the current stack's config, or raise ConfigError listing every problem."""
    stack = pulumi.get_stack()
    config = pulumi.Config(NAMESPACE)
    where = stack_file(stack)
    present = _configured_keys()

    problems = [
        f"  {NAMESPACE}:{key}: unknown key (known: {', '.join(sorted(_KNOWN_KEYS))})"
        for key in sorted(present - _KNOWN_KEYS)
    ]
    raw = {key: _decode(config.get(key)) for key in sorted(present & set(_FIELDS))}
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        problems += [_describe(error) for error in exc.errors()]

    password: pulumi.Output[str] | None = None
    if PASSWORD_KEY in present:
        if not _is_secret(PASSWORD_KEY):
            problems.append(
                f"  {NAMESPACE}:{PASSWORD_KEY}: must be a secret; set it with "
                f"`pulumi config set --secret {NAMESPACE}:{PASSWORD_KEY} <token> --stack {stack}`"
            )
        else:
            password = config.get_secret(PASSWORD_KEY)
    if settings is not None and settings.image.username and PASSWORD_KEY not in present:
        problems.append(
            f"  {NAMESPACE}:{PASSWORD_KEY}: missing secret; image.username is set, so the registry "
            f"needs a password: `pulumi config set --secret {NAMESPACE}:{PASSWORD_KEY} <token> "
            f"--stack {stack}`"
        )
    if settings is not None and PASSWORD_KEY in present and not settings.image.username:
        problems.append(
            f"  {NAMESPACE}:image.username: required when {NAMESPACE}:{PASSWORD_KEY} is set"
        )
    if settings is not None and settings.model.source == "local":
        model_dir = Path(settings.model.path or "")
        if not model_dir.is_dir():
            problems.append(
                f"  {NAMESPACE}:model.path: {model_dir} is not a directory "
                f"(relative paths start at the project root {Path.cwd()})"
            )

    if problems:
        raise ConfigError(f"invalid stack config in {where}:\n" + "\n".join(problems))
    assert settings is not None
    warning = capacity_warning(settings, CAPACITY_FILE)
    if warning:
        pulumi.log.warn(f"{where}: {warning}")
    return StackConfig(stack=stack, settings=settings, registry_password=password)


def cpu_cores(quantity: str) -> float:
    """A CPU quantity ("2", "1.5", "500m") in cores."""
    number = quantity.rstrip("mk")
    return float(number) * _CPU_UNITS[quantity[len(number) :]]


def pod_cpus(settings: Settings) -> float | None:
    """The CPUs one pod may use: its CPU limit (the capacity is measured pinned to that many)."""
    limits = settings.resources.limits if settings.resources else None
    return cpu_cores(limits["cpu"]) if limits and "cpu" in limits else None


def capacity_warning(settings: Settings, path: Path) -> str | None:
    """Why the texts target cannot work, if it exceeds what one pod was measured to carry: the
    average per pod never reaches the target, so that metric never adds a pod and p95 breaks the
    SLO first (the seed's "CPU at 52 %, QPS at its limit, the HPA does nothing")."""
    target = settings.autoscaling.target_texts_per_second_per_pod
    cpus = pod_cpus(settings)
    if not settings.autoscaling.enabled or target is None or cpus is None:
        return None
    shown = path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path
    try:
        record = recorded_capacity(settings.image.runtime, cpus, path)
        if record is None or target <= float(record["texts_per_second"]):
            return None
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        return f"{shown} is not a readable capacity record ({err!r}); the texts target is unchecked"
    note = " (provisional measurement)" if record.get("provisional") else ""
    return (
        f"{NAMESPACE}:autoscaling.targetTextsPerSecondPerPod is {target:g} texts/s per pod, above "
        f"the recorded capacity of one {settings.image.runtime} pod with {cpus:g} CPUs: "
        f"{record['texts_per_second']:g} texts/s within p95 <= {record['slo_p95_ms']} ms "
        f"({shown}, {record['date']}{note}). The texts metric would never add a pod before "
        f"the SLO breaks; `make plan STACK={pulumi.get_stack()}` recommends a target."
    )


def has_registry_auth(cfg: StackConfig) -> bool:
    return cfg.settings.image.username is not None and cfg.registry_password is not None
