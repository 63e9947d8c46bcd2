"""StackConfig validation: every class of invalid stack config stops the program before any
resource is registered, with a message naming the key and the stack file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi_harness import REPO, TEST_PASSWORD, prod_secrets, run_program, start

from infra import config as config_module
from infra.config import ConfigError, Settings
from infra.program import deploy


def config_error(stack: str, **start_kwargs: Any) -> tuple[str, list]:
    """The ConfigError message of running the program, and what it registered before failing."""
    holder: dict[str, Any] = {}

    @pulumi.runtime.test
    def _run():
        holder["run"] = start(stack, **start_kwargs)
        return pulumi.Output.all(**deploy())

    with pytest.raises(ConfigError) as info:
        _run()
    return str(info.value), holder["run"].resources


def prod_value(key: str) -> Any:
    return yaml.safe_load((REPO / "Pulumi.prod.yaml").read_text())["config"][f"uninlu:{key}"]


def with_changes(key: str, **changes: Any) -> dict[str, Any]:
    """The prod stack's object `key` with some fields changed (None removes a field)."""
    value = dict(prod_value(key))
    for field, new in changes.items():
        if new is None:
            value.pop(field, None)
        else:
            value[field] = new
    return {key: value}


CASES = {
    "wrong type (nested)": (
        {"overrides": with_changes("autoscaling", maxReplicas="eight")},
        ["uninlu:autoscaling.maxReplicas", "valid integer", "'eight'"],
    ),
    "wrong type (top level)": (
        {"overrides": {"replicas": "two"}},
        ["uninlu:replicas", "valid integer"],
    ),
    "wrong type (object expected)": (
        {"overrides": {"autoscaling": "on"}},
        ["uninlu:autoscaling", "valid dictionary"],
    ),
    "min above max": (
        {"overrides": with_changes("autoscaling", minReplicas=9, maxReplicas=8)},
        ["uninlu:autoscaling", "minReplicas (9) must not exceed maxReplicas (8)"],
    ),
    "out of range": (
        {"overrides": with_changes("autoscaling", targetCPUUtilizationPercentage=150)},
        ["uninlu:autoscaling.targetCPUUtilizationPercentage", "less than or equal to 100"],
    ),
    "unknown top-level key": (
        {"overrides": {"replica": 3}},
        ["uninlu:replica: unknown key"],
    ),
    "unknown nested key (typo)": (
        {"overrides": with_changes("autoscaling", maxReplica=12)},
        ["uninlu:autoscaling.maxReplica: unknown key"],
    ),
    "missing required key": (
        {"remove": ("image",)},
        ["uninlu:image: Field required"],
    ),
    "bad enum value": (
        {"overrides": {"service": {"type": "Loadbalancer", "port": 80}}},
        ["uninlu:service.type", "'ClusterIP', 'NodePort' or 'LoadBalancer'"],
    ),
    "bad quantity": (
        {"overrides": {"resources": {"requests": {"cpu": "two cores"}}}},
        ["uninlu:resources.requests.cpu", "'two cores'"],
    ),
    "pdb with one replica": (
        {
            "overrides": {
                "autoscaling": {**prod_value("autoscaling"), "minReplicas": 1},
            }
        },
        ["uninlu:pdb.enabled: needs at least 2 replicas (here 1)"],
    ),
    "texts-rate target without the adapter": (
        {"overrides": with_changes("monitoring", installAdapter=False)},
        ["uninlu:autoscaling.targetTextsPerSecondPerPod: needs the Prometheus Adapter"],
    ),
    "the renamed requests-per-second key": (
        {
            "overrides": with_changes(
                "autoscaling", targetTextsPerSecondPerPod=None, targetRequestsPerSecondPerPod=20
            )
        },
        [
            "uninlu:autoscaling: targetRequestsPerSecondPerPod was renamed to "
            "targetTextsPerSecondPerPod",
            "counts texts",
        ],
    ),
    "capacity with a zero SLO": (
        {"overrides": {"capacity": {"sloP95Ms": 0}}},
        ["uninlu:capacity.sloP95Ms", "greater than or equal to 1", "(got 0)"],
    ),
    "capacity with a negative peak": (
        {"overrides": {"capacity": {"peakTextsPerSecond": -3}}},
        ["uninlu:capacity.peakTextsPerSecond", "greater than 0"],
    ),
    "adapter without a Prometheus": (
        {"overrides": with_changes("monitoring", prometheusUrl=None)},
        ["uninlu:monitoring", "needs a Prometheus: set prometheusUrl"],
    ),
    "GPU device with the CPU-only ONNX image": (
        {"overrides": {"server": {**prod_value("server"), "device": "cuda"}}},
        ["uninlu:server.device: cuda needs image.runtime: torch"],
    ),
    "request timeout of zero": (
        {"overrides": {"server": {**prod_value("server"), "requestTimeoutSeconds": 0}}},
        ["uninlu:server.requestTimeoutSeconds", "greater than 0"],
    ),
    "round budget of zero": (
        {"overrides": {"server": {**prod_value("server"), "roundBudgetMs": 0}}},
        ["uninlu:server.roundBudgetMs", "greater than 0"],
    ),
    "the removed sliceTokens key": (
        {"overrides": {"server": {**prod_value("server"), "sliceTokens": 1024}}},
        [
            "  uninlu:server: sliceTokens was removed: scheduling rounds are bounded in time, not "
            "in model tokens: set roundBudgetMs (ROUND_BUDGET_MS, milliseconds of backend work "
            "per round) instead; delete the key from the stack file"
        ],
    ),
    "the removed threadTuning key": (
        {"overrides": {"server": {**prod_value("server"), "threadTuning": "fixed"}}},
        [
            "  uninlu:server: threadTuning was removed: the server always runs torchThreads "
            "intra-op threads (what threadTuning: fixed did); delete the key from the stack file"
        ],
    ),
    "the removed torch-int8 runtime": (
        {"overrides": with_changes("image", runtime="torch-int8")},
        [
            "  uninlu:image.runtime: torch-int8 was removed (the torch dynamic int8 backend): use "
            "onnx-int8; accepted: onnx, onnx-int8, torch (got 'torch-int8')"
        ],
    ),
    "unknown image runtime": (
        {"overrides": with_changes("image", runtime="tensorrt")},
        ["uninlu:image.runtime", "'onnx', 'onnx-int8' or 'torch'"],
    ),
    "latency SLO between the histogram's buckets": (
        {"overrides": {"capacity": {"sloP95Ms": 800}}},
        [
            "uninlu:capacity.sloP95Ms: the latency alerts count requests slower than the SLO",
            "500, 1000, 2500",
            "got 800",
        ],
    ),
    "alert threshold out of range": (
        {"overrides": with_changes("monitoring", alerts={"errorRatio": 5})},
        ["uninlu:monitoring.alerts.errorRatio", "less than or equal to 1"],
    ),
    "tolerance below Kubernetes 1.35": (
        {"overrides": with_changes("autoscaling", behavior={"scaleUp": {"tolerance": 0.05}})},
        [
            "uninlu:autoscaling: behavior.scaleUp.tolerance needs kubernetesVersion 1.35 or later",
            "the stack declares 1.30",
        ],
    ),
    "tolerance of 1 or more": (
        {
            "overrides": {
                "kubernetesVersion": "1.35",
                **with_changes("autoscaling", behavior={"scaleDown": {"tolerance": 1}}),
            }
        },
        ["uninlu:autoscaling.behavior.scaleDown.tolerance", "less than 1"],
    ),
    "unquoted Kubernetes version": (
        {"overrides": {"kubernetesVersion": 1.30}},  # YAML's 1.30 is the number 1.3
        ["uninlu:kubernetesVersion: 1.3 is older than the chart supports", 'quoted, e.g. "1.30"'],
    ),
    "Kubernetes version with a patch level": (
        {"overrides": {"kubernetesVersion": "1.31.2"}},
        ["uninlu:kubernetesVersion", "(got '1.31.2')"],
    ),
    "unknown autoscaling engine": (
        {"overrides": with_changes("autoscaling", engine="both")},
        ["uninlu:autoscaling.engine", "'hpa' or 'keda'"],
    ),
    "KEDA's fallback with the hpa engine": (
        {"overrides": with_changes("autoscaling", fallbackReplicas=3)},
        ["uninlu:autoscaling: fallbackReplicas is KEDA's (engine: keda)"],
    ),
    "KEDA's fallback beyond maxReplicas": (
        {"overrides": with_changes("autoscaling", engine="keda", fallbackReplicas=9)},
        [
            "uninlu:autoscaling: fallbackReplicas (9) must lie within minReplicas (2) and",
            "maxReplicas (5)",
        ],
    ),
    "KEDA's fallback without the texts trigger": (
        {
            "overrides": {
                "autoscaling": {
                    **prod_value("autoscaling"),
                    "engine": "keda",
                    "fallbackReplicas": 3,
                    "targetTextsPerSecondPerPod": None,  # CPU only
                }
            }
        },
        ["uninlu:autoscaling: fallbackReplicas is the fallback of KEDA's prometheus trigger"],
    ),
    "KEDA installed for the hpa engine": (
        {"overrides": with_changes("monitoring", installKeda=True)},
        ["uninlu:monitoring.installKeda: KEDA is installed for autoscaling.engine: keda"],
    ),
    "KEDA's texts trigger without a Prometheus": (
        {
            "overrides": {
                **with_changes("autoscaling", engine="keda"),
                **with_changes("monitoring", installAdapter=False, prometheusUrl=None),
            }
        },
        [
            "uninlu:monitoring: KEDA's prometheus trigger (autoscaling.engine: keda) needs a "
            "Prometheus"
        ],
    ),
    "local model without a directory": (
        {"overrides": {"model": {"source": "local", "path": "no/such/dir"}}},
        ["uninlu:model.path", "no/such/dir is not a directory"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_invalid_config_stops_before_any_resource(case):
    start_kwargs, expected = CASES[case]
    message, registered = config_error("prod", secrets=prod_secrets(), **start_kwargs)
    assert message.startswith("invalid stack config in Pulumi.prod.yaml:\n"), message
    for fragment in expected:
        assert fragment in message, message
    assert registered == []


@pytest.mark.parametrize(
    ("engine", "install_adapter", "installed"),
    [("hpa", None, True), ("keda", None, False), ("keda", True, True), ("hpa", True, True)],
)
def test_the_adapter_comes_with_the_hpa_engine_unless_the_stack_says(
    engine, install_adapter, installed
):
    document = yaml.safe_load((REPO / "Pulumi.prod.yaml").read_text())["config"]
    plain = {k.split(":", 1)[1]: v for k, v in document.items() if k.startswith("uninlu:")}
    plain["autoscaling"] = {**plain["autoscaling"], "engine": engine}
    plain["monitoring"] = {**plain["monitoring"], "installAdapter": install_adapter}
    assert Settings.model_validate(plain).adapter_installed is installed


def test_missing_registry_secret_says_how_to_set_it():
    message, registered = config_error("prod")  # no `pulumi config set --secret` done yet
    assert "Pulumi.prod.yaml" in message
    assert "uninlu:registryPassword: missing secret" in message
    assert "pulumi config set --secret uninlu:registryPassword <token> --stack prod" in message
    assert registered == []


def test_plain_text_password_is_refused():
    message, registered = config_error("prod", overrides={"registryPassword": TEST_PASSWORD})
    assert "uninlu:registryPassword: must be a secret" in message
    assert TEST_PASSWORD not in message
    assert registered == []


def test_every_problem_is_listed_at_once():
    message, _ = config_error(
        "dev",
        overrides={"replica": 2, "service": {"type": "ClusterIP", "port": 0}},
    )
    assert "Pulumi.dev.yaml" in message
    assert "uninlu:replica: unknown key" in message
    assert "uninlu:service.port" in message


def test_both_stack_files_are_valid_and_use_only_known_keys():
    known = {field.alias or name for name, field in Settings.model_fields.items()}
    for stack in ("dev", "prod"):
        document = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())
        keys = {key.split(":", 1)[1] for key in document["config"] if key.startswith("uninlu:")}
        assert keys <= known, keys - known
        plain = {k.split(":", 1)[1]: v for k, v in document["config"].items() if "uninlu:" in k}
        Settings.model_validate(plain)


def test_stack_config_reference_documents_every_key():
    reference = (REPO / "docs" / "stack-config.md").read_text()
    for name, field in Settings.model_fields.items():
        nested = getattr(field.annotation, "model_fields", None)
        if not nested:
            assert f"`{field.alias or name}`" in reference, name
            continue
        for sub_name, sub_field in nested.items():
            key = f"`{field.alias or name}.{sub_field.alias or sub_name}`"
            assert key in reference, key
    assert "`registryPassword`" in reference


# --- the target against the recorded capacity ---------------------------------------------


def _capacity_file(tmp_path, **record: Any) -> Path:
    base = {
        "runtime": "onnx",
        "cpus": 2.0,
        "slo_p95_ms": 1000,
        "texts_per_second": 4.5,
        "date": "2026-12-01T20:00:00Z",
    }
    path = tmp_path / "capacity.json"
    path.write_text(json.dumps({"format": 1, "records": [{**base, **record}]}))
    return path


def _warnings_of_prod(monkeypatch, capacity: Path, target: float) -> list[str]:
    """What the program warns about for prod with this texts target (the prod file's runtime is
    onnx with a CPU limit of 2)."""
    warnings: list[str] = []
    monkeypatch.setattr(config_module, "CAPACITY_FILE", capacity)
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *a, **k: warnings.append(message))
    overrides = with_changes("autoscaling", targetTextsPerSecondPerPod=target)
    run_program(deploy, "prod", secrets=prod_secrets(), overrides=overrides)
    return warnings


def test_target_above_the_recorded_capacity_warns_in_preview(monkeypatch, tmp_path):
    warnings = _warnings_of_prod(monkeypatch, _capacity_file(tmp_path), target=20)
    (warning,) = [w for w in warnings if "targetTextsPerSecondPerPod" in w]
    assert warning.startswith("Pulumi.prod.yaml: uninlu:autoscaling.targetTextsPerSecondPerPod")
    assert "is 20 texts/s per pod" in warning
    assert "one onnx pod with 2 CPUs: 4.5 texts/s within p95 <= 1000 ms" in warning
    assert str(tmp_path / "capacity.json") in warning
    assert "make plan STACK=prod" in warning


def test_no_warning_within_capacity_or_without_a_matching_record(monkeypatch, tmp_path):
    assert _warnings_of_prod(monkeypatch, _capacity_file(tmp_path), target=4.5) == []
    other_cpus = _capacity_file(tmp_path, cpus=4.0)
    assert _warnings_of_prod(monkeypatch, other_cpus, target=20) == []
    other_runtime = _capacity_file(tmp_path, runtime="onnx-int8")
    assert _warnings_of_prod(monkeypatch, other_runtime, target=20) == []
    assert _warnings_of_prod(monkeypatch, tmp_path / "missing.json", target=20) == []


def test_an_unreadable_capacity_file_is_a_warning_not_a_traceback(monkeypatch, tmp_path):
    broken = tmp_path / "capacity.json"
    broken.write_text('{"records": [{"runtime": "onnx"')
    (warning,) = _warnings_of_prod(monkeypatch, broken, target=20)
    assert "is not a readable capacity record" in warning and str(broken) in warning


@pytest.mark.parametrize(
    ("quantity", "cores"), [("2", 2.0), ("1.5", 1.5), ("500m", 0.5), ("2500m", 2.5)]
)
def test_cpu_quantities_in_cores(quantity, cores):
    assert config_module.cpu_cores(quantity) == cores


def test_the_committed_capacity_record_matches_what_the_stack_files_use():
    """The stack files' targets come from `make plan`: none exceeds its recorded capacity."""
    for stack in ("dev", "prod"):
        document = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())
        plain = {k.split(":", 1)[1]: v for k, v in document["config"].items() if "uninlu:" in k}
        settings = Settings.model_validate(plain)
        record = config_module.recorded_capacity(
            settings.image.runtime, config_module.pod_cpus(settings), config_module.CAPACITY_FILE
        )
        assert record is not None, stack
        assert config_module.capacity_warning(settings, config_module.CAPACITY_FILE) is None
