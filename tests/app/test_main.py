"""`python -m app predict`: the command line users run, as a real subprocess."""

import json
import subprocess
import sys

from app.backend import load_backend
from app.pipeline import predict

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
