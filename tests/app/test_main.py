"""`python -m app predict`: the command line users run, as a real subprocess."""

import json
import subprocess
import sys

from app.model.pipeline import predict
from app.runtime.torch_backend import load_backend

SCHEMA = {"胜负(事件触发词)": {"时间": None, "败者": None, "胜者": None}}
TEXT = "7月28日，天津泰达在德比战中以0-1负于天津天海。"


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "app", "predict", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_predict_prints_the_pipeline_output(tiny_model_dir):
    done = _run(
        "--model-path",
        str(tiny_model_dir),
        "--text",
        TEXT,
        "--schema",
        json.dumps(SCHEMA, ensure_ascii=False),
        "--output-all-prefix",
        "--threads",
        "1",
    )
    assert done.returncode == 0, done.stderr
    backend, tokenizer = load_backend(tiny_model_dir, device="cpu")
    expected = predict(backend, tokenizer, TEXT, SCHEMA, output_all_prefix=True)
    assert json.loads(done.stdout) == {"output": expected}
    assert expected


def test_bad_schema_is_a_clear_error_without_traceback(tiny_model_dir):
    done = _run("--model-path", str(tiny_model_dir), "--text", TEXT, "--schema", '{"a": [1]}')
    assert done.returncode == 2
    assert "error: schema value at 'a' must be null or an object" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_model_path_is_a_clear_error(tmp_path):
    done = _run("--model-path", str(tmp_path), "--text", TEXT, "--schema", '{"a": null}')
    assert done.returncode == 2
    assert "missing file config.json" in done.stderr
    assert "Traceback" not in done.stderr


def test_predict_applies_the_server_limits_unless_lifted(tiny_model_dir):
    """Same environment settings as the server: over MAX_REQUEST_COST is refused; --no-limits
    runs it anyway (in calls of at most MAX_BATCH_TOKENS, so memory stays bounded)."""
    import os

    long_text = TEXT * 20
    args = ["--model-path", str(tiny_model_dir), "--text", long_text, "--schema",
            json.dumps(SCHEMA, ensure_ascii=False), "--threads", "1"]  # fmt: skip
    env = {**os.environ, "MAX_REQUEST_COST": "500", "MAX_BATCH_TOKENS": "300"}
    refused = subprocess.run(
        [sys.executable, "-m", "app", "predict", *args],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "above the limit MAX_REQUEST_COST=500" in refused.stderr
    assert "Traceback" not in refused.stderr
    lifted = subprocess.run(
        [sys.executable, "-m", "app", "predict", *args, "--no-limits"],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert lifted.returncode == 0, lifted.stderr
    backend, tokenizer = load_backend(tiny_model_dir, device="cpu")
    expected = predict(backend, tokenizer, long_text, SCHEMA, max_cost=None)
    assert json.loads(lifted.stdout) == {"output": expected}
