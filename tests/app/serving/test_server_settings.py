"""Settings from the environment, start-up failures with clear messages and exit codes, and the
human log format."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys

import httpx
import pytest

from app.serving.logging import configure_logging, request_id_var
from app.serving.settings import Settings, SettingsError
from tests.app.conftest import REPO, free_port


def test_from_env_parses_types_and_ignores_blanks():
    s = Settings.from_env(
        {
            "PORT": "8000",
            "TORCH_THREADS": "2",
            "BATCH_WAIT_MS": "1.5",
            "LOG_REQUEST_TEXT": "yes",
            "MAX_QUEUE": " ",
            "MODEL_PATH": "/models/x",
        }
    )
    assert (s.port, s.torch_threads, s.batch_wait_ms, s.log_request_text) == (8000, 2, 1.5, True)
    assert s.max_queue == Settings().max_queue and s.model_path == "/models/x"
    timed = Settings.from_env({"ROUND_BUDGET_MS": "120.5"})
    assert timed.round_budget_ms == 120.5 and timed.recorded_speed is None
    hooked = Settings.from_env({"TEST_BACKEND_SECONDS_PER_TOKEN": "0.001, 0.002"})
    assert hooked.recorded_speed == {"encode": 0.001, "score": 0.002}


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PORT": "http"}, "PORT"),
        ({"MAX_QUEUE": "0"}, "MAX_QUEUE"),
        ({"BATCH_WAIT_MS": "-1"}, "BATCH_WAIT_MS"),
        ({"LOG_REQUEST_TEXT": "perhaps"}, "LOG_REQUEST_TEXT"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"DEVICE": "tpu"}, "DEVICE"),
        ({"OMP_WAIT_POLICY": "spin"}, "OMP_WAIT_POLICY"),
        ({"INTRA_OP_SPINNING": "sometimes"}, "INTRA_OP_SPINNING"),
        ({"MAX_BATCH_ITEMS": "10", "MAX_QUEUE": "5"}, "MAX_BATCH_ITEMS"),
        ({"ROUND_BUDGET_MS": "0"}, "ROUND_BUDGET_MS"),
        ({"ROUND_BUDGET_MS": "inf"}, "ROUND_BUDGET_MS"),
        ({"TEST_BACKEND_SECONDS_PER_TOKEN": "0.001"}, "TEST_BACKEND_SECONDS_PER_TOKEN"),
        ({"TEST_BACKEND_SECONDS_PER_TOKEN": "fast,slow"}, "TEST_BACKEND_SECONDS_PER_TOKEN"),
    ],
)
def test_bad_values_name_the_variable(env, named):
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)


def test_backend_names_the_accepted_kinds():
    assert Settings.from_env({"BACKEND": "onnx-int8"}).backend == "onnx-int8"
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"BACKEND": "tensorrt"})
    assert str(error.value) == "BACKEND must be one of torch, onnx, onnx-int8, got 'tensorrt'"


def test_the_removed_torch_int8_backend_names_its_replacement():
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"BACKEND": "torch-int8"})
    assert str(error.value) == (
        "BACKEND must be one of torch, onnx, onnx-int8 (torch-int8 was removed: use onnx-int8)"
    )


REMOVED_SETTINGS = {
    "SCHEDULER": "SCHEDULER was removed: the batcher always serves the request with the least "
    "work so far first (least attained), in rounds of ROUND_BUDGET_MS; unset SCHEDULER",
    "SLICE_TOKENS": "SLICE_TOKENS was removed: rounds are bounded in time, not in model tokens: "
    "set ROUND_BUDGET_MS (milliseconds of backend work per scheduling round, sized from the "
    "measured speed) and unset SLICE_TOKENS",
    "THREAD_TUNING": "THREAD_TUNING was removed: torch always runs TORCH_THREADS intra-op threads "
    "(what THREAD_TUNING=fixed did); unset THREAD_TUNING",
}


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("SCHEDULER", "least_attained"),  # even the behaviour the server keeps
        ("SCHEDULER", "legacy"),
        ("SCHEDULER", "round_robin"),
        ("THREAD_TUNING", "fixed"),
        ("THREAD_TUNING", "adaptive"),
        ("SLICE_TOKENS", "1024"),
    ],
)
def test_a_removed_setting_stops_with_what_the_server_does_now(env, value):
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"MODEL_PATH": "/x", env: value})
    assert str(error.value) == REMOVED_SETTINGS[env]


def test_removed_settings_are_neither_logged_nor_refused_when_blank():
    """Like every setting, a blank one counts as unset."""
    settings = Settings.from_env({"SCHEDULER": " ", "THREAD_TUNING": "", "SLICE_TOKENS": ""})
    assert settings.describe().keys().isdisjoint(REMOVED_SETTINGS)


def test_every_setting_is_documented_and_logged():
    described = Settings().describe()
    for f in dataclasses.fields(Settings):
        assert f.metadata["doc"] and f.metadata["env"] in described
    for name in (
        "MODEL_PATH",
        "PORT",
        "WARMUP_TEXT",
        "MAX_BATCH_TOKENS",
        "BATCH_WAIT_MS",
        "MAX_QUEUE",
        "GRACEFUL_SHUTDOWN_SECONDS",
        "LOG_FORMAT",
    ):  # DESIGN.md §5
        assert name in described


def _run_app(env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=REPO,
        env={**os.environ, "HOST": "127.0.0.1", "PORT": str(free_port()), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_invalid_setting_exits_2_with_a_message():
    done = _run_app({"MODEL_PATH": "/x", "MAX_QUEUE": "lots"})
    assert done.returncode == 2
    assert "MAX_QUEUE='lots' is not a valid int" in done.stderr


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"SCHEDULER": "legacy"}, REMOVED_SETTINGS["SCHEDULER"]),
        ({"THREAD_TUNING": "adaptive"}, REMOVED_SETTINGS["THREAD_TUNING"]),
        ({"SLICE_TOKENS": "400"}, REMOVED_SETTINGS["SLICE_TOKENS"]),
        (
            {"BACKEND": "torch-int8"},
            "BACKEND must be one of torch, onnx, onnx-int8 (torch-int8 was removed: use onnx-int8)",
        ),
    ],
    ids=["scheduler", "thread-tuning", "slice-tokens", "torch-int8"],
)
def test_a_removed_setting_refuses_to_start_with_one_line(env, line):
    done = _run_app({"MODEL_PATH": "/x", **env})
    assert done.returncode == 2
    assert done.stderr == f"uninlu: invalid setting: {line}\n"


def test_missing_model_path_exits_2():
    done = _run_app({"MODEL_PATH": ""})
    assert done.returncode == 2 and "MODEL_PATH is not set" in done.stderr


def test_unloadable_model_exits_1_with_a_json_error(tmp_path):
    done = _run_app({"MODEL_PATH": str(tmp_path / "missing"), "LOG_FORMAT": "json"})
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if '"level": "ERROR"' in line]
    assert errors and "missing" in errors[0] and "Traceback" not in done.stderr


def test_text_log_format_is_for_humans(capfd):
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging(Settings(log_format="text", log_level="INFO"))
        token = request_id_var.set("rid-7")
        logging.getLogger("uninlu.test").info("hello", extra={"route": "/predict"})
        request_id_var.reset(token)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    line = capfd.readouterr().err.strip().splitlines()[-1]
    assert "INFO uninlu.test: hello" in line
    assert "route=/predict" in line and "request_id=rid-7" in line
    assert not line.startswith("{")


def test_a_queue_of_one_still_warms_up_and_serves(start_server):
    """Warm-up goes through admission like any request: it must fit even MAX_QUEUE=1."""
    server = start_server(MAX_QUEUE="1", MAX_BATCH_ITEMS="1")
    response = httpx.post(
        server.url + "/predict", json={"text": "小王在北京。", "schema": {"人物": None}}
    )
    assert response.status_code == 200 and "output" in response.json()


def test_server_hands_the_wait_policy_to_openmp(start_server, monkeypatch):
    """libgomp reads OMP_WAIT_POLICY once, when torch loads: the server sets it from its settings
    before the model import. OMP_DISPLAY_ENV makes libgomp print what it applied (PASSIVE: no
    spinning, GOMP_SPINCOUNT 0; left unset, libgomp spins 300000 rounds)."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    server = start_server(OMP_DISPLAY_ENV="VERBOSE")
    logs = server.logs()
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in logs and "GOMP_SPINCOUNT = '0'" in logs
    logged = next(r for r in server.log_records() if r.get("message") == "settings")
    assert logged["settings"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert logged["settings"]["INTRA_OP_SPINNING"] is False
