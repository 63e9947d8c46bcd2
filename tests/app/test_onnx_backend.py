"""The ONNX Runtime backend (fp32 and int8) against the fp32 torch reference, on a tiny
checkpoint exported by app/export_onnx.py, and its torch-free loading (the lean CPU image).

The checkpoint is `bert_scaled_model_dir` (tests/conftest.py): int8 agreement on the plain tiny
checkpoint measures its pathological sharpness, not the quantisation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.backend import load_backend
from app.errors import CheckpointError
from app.export_onnx import export
from app.onnx_backend import ONNX_DIR, load_onnx_backend
from app.pipeline import PromptRow, predict
from bench.mix import find_examples

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = find_examples()
# Agreement thresholds with torch fp32 on examples.json: fp32 must give identical outputs on every
# example; int8 must keep at least this share of the spans of the single-level examples identical
# (deeper levels multiply any flipped span, so they are not a stable measure).
INT8_MIN_SPAN_SHARE = 0.9
FP32_ATOL = 1e-4
# int8 logits of a row depend slightly on its batch companions (one activation scale per tensor).
INT8_BATCH_ATOL = 0.05


@pytest.fixture(scope="module")
def onnx_model_dir(bert_scaled_model_dir, tmp_path_factory) -> Path:
    """A copy of the checkpoint with its exported graphs in onnx/ (as the lean image has)."""
    model = shutil.copytree(bert_scaled_model_dir, tmp_path_factory.mktemp("onnx") / "model")
    export(model, model / ONNX_DIR, int8=True)
    return model


@pytest.fixture(scope="module")
def torch_ref(bert_scaled_model_dir):
    return load_backend(bert_scaled_model_dir, device="cpu", threads=1)


@pytest.fixture(scope="module")
def examples() -> list[dict]:
    return json.loads(EXAMPLES.read_text(encoding="utf-8"))["examples"]


def _items(output: list) -> set[str]:
    return {json.dumps(chain, ensure_ascii=False, sort_keys=True) for chain in output}


def _rows(backend, tokenizer):
    """Prompt rows of two texts of different lengths in one batch, each with its own offset."""
    windows = [tokenizer("小林在杭州买了龙井茶。")["input_ids"], tokenizer("我爱北京")["input_ids"]]
    states = backend.encode(windows)
    prompts = tokenizer(["人物: ", "地理位置: ", "组织机构: "])["input_ids"]
    return [PromptRow(states[i % 2], prompts[i], len(windows[i % 2])) for i in range(3)]


def test_fp32_graphs_match_torch_on_a_mixed_batch(onnx_model_dir, torch_ref):
    torch_backend, tokenizer = torch_ref
    onnx_backend, _ = load_onnx_backend(onnx_model_dir, threads=1)
    want = torch_backend.score(_rows(torch_backend, tokenizer))
    got = onnx_backend.score(_rows(onnx_backend, tokenizer))
    assert len(got) == len(want) == 3
    for (gh, gt), (wh, wt) in zip(got, want, strict=True):
        assert gh.dtype == np.float32 and gh.shape == wh.shape
        np.testing.assert_allclose(gh, wh, atol=FP32_ATOL)
        np.testing.assert_allclose(gt, wt, atol=FP32_ATOL)


@pytest.mark.parametrize(("int8", "atol"), [(False, 1e-5), (True, INT8_BATCH_ATOL)])
def test_one_batched_call_equals_rows_one_by_one(onnx_model_dir, torch_ref, int8, atol):
    """The batcher's contract: rows of different texts share a call without changing results.
    int8 only approximately: dynamic quantisation takes one activation scale per batch."""
    _, tokenizer = torch_ref
    backend, _ = load_onnx_backend(onnx_model_dir, threads=1, int8=int8)
    rows = _rows(backend, tokenizer)
    together = backend.score(rows)
    for row, (head, tail) in zip(rows, together, strict=True):
        [(h1, t1)] = backend.score([row])
        np.testing.assert_allclose(head, h1, atol=atol)
        np.testing.assert_allclose(tail, t1, atol=atol)


@pytest.mark.parametrize(("int8", "min_share"), [(False, 1.0), (True, INT8_MIN_SPAN_SHARE)])
def test_agreement_with_torch_fp32_on_the_examples(
    onnx_model_dir, torch_ref, examples, int8, min_share
):
    torch_backend, tokenizer = torch_ref
    backend, _ = load_onnx_backend(onnx_model_dir, threads=1, int8=int8)
    assert backend.name == ("onnx-int8" if int8 else "onnx-fp32")
    matched = union = identical = 0
    for e in examples:
        want = predict(torch_backend, tokenizer, e["text"], e["schema"])
        got = predict(backend, tokenizer, e["text"], e["schema"])
        identical += got == want
        if all(v is None for v in e["schema"].values()):
            matched += len(_items(got) & _items(want))
            union += len(_items(got) | _items(want))
    assert union > 0, "the checkpoint should extract spans from the examples"
    if not int8:
        assert identical == len(examples)
    assert matched / union >= min_share, f"{matched}/{union} spans identical"


def test_int8_graphs_keep_the_pointer_heads_fp32(onnx_model_dir):
    import onnx

    from app.onnx_backend import graph_paths

    _, cross = graph_paths(onnx_model_dir / ONNX_DIR, int8=True)
    graph = onnx.load(str(cross)).graph
    weights = {init.name: tuple(init.dims) for init in graph.initializer}
    fp32 = [
        weights[n.input[1]] for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights
    ]
    assert sorted(fp32) == [(32, 1), (32, 1)]  # head and tail (hidden 32); the layers are int8
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in graph.node)


def test_missing_graph_says_how_to_export(tiny_model_dir):
    with pytest.raises(CheckpointError, match=r"missing ONNX graph .*app\.export_onnx.*--int8"):
        load_onnx_backend(tiny_model_dir, int8=True)


def test_load_backend_dispatches_the_onnx_kinds(onnx_model_dir):
    backend, tokenizer = load_backend(onnx_model_dir, threads=1, kind="onnx-int8")
    assert backend.name == "onnx-int8" and tokenizer.is_fast
    with pytest.raises(ValueError, match="unknown backend kind 'tensorrt'"):
        load_backend(onnx_model_dir, kind="tensorrt")


def test_onnx_backend_predicts_without_torch(onnx_model_dir, torch_ref, examples):
    """The lean image has no torch: load and predict with torch made unimportable."""
    code = (
        "import json, sys\n"
        "sys.modules['torch'] = None\n"
        "from app.onnx_backend import load_onnx_backend\n"
        "from app.pipeline import predict\n"
        f"b, t = load_onnx_backend({str(onnx_model_dir)!r}, threads=1)\n"
        "e = json.loads(sys.stdin.read())\n"
        "print(json.dumps(predict(b, t, e['text'], e['schema'])))\n"
    )
    example = examples[0]
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(example),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    torch_backend, tokenizer = torch_ref
    want = predict(torch_backend, tokenizer, example["text"], example["schema"])
    assert json.loads(done.stdout.strip().splitlines()[-1]) == want


def test_server_serves_with_backend_onnx_int8(start_server, onnx_model_dir, examples):
    server = start_server(MODEL_PATH=str(onnx_model_dir), BACKEND="onnx-int8")
    body = {"text": examples[0]["text"], "schema": examples[0]["schema"]}
    response = httpx.post(server.url + "/predict", json=body, timeout=30)
    assert response.status_code == 200
    assert isinstance(response.json()["output"], list)
    assert 'backend="onnx-int8"' in httpx.get(server.url + "/metrics", timeout=10).text


@pytest.mark.parametrize(("spinning", "entry"), [(False, "0"), (True, "1")])
def test_intra_op_spinning_reaches_both_sessions(onnx_model_dir, spinning, entry):
    backend, _ = load_onnx_backend(onnx_model_dir, threads=1, spinning=spinning)
    for session in (backend.encoder, backend.cross_session):
        options = session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == entry
