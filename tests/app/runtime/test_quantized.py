"""Dynamic int8 torch backend (BACKEND=torch-int8) against the fp32 torch reference, on
`bert_scaled_model_dir` (tests/conftest.py: the tiny layout with BERT's weight scale)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from torch import nn

from app.model.pipeline import predict
from app.runtime.torch_backend import load_backend
from app.serving.settings import Settings, SettingsError
from bench.mix import find_examples

EXAMPLES = find_examples()
# Agreement threshold with torch fp32 on examples.json: share of the spans of the single-level
# examples that are identical (deeper levels multiply any flipped span).
INT8_MIN_SPAN_SHARE = 0.9


@pytest.fixture(scope="module")
def backends(bert_scaled_model_dir):
    fp32 = load_backend(bert_scaled_model_dir, device="cpu", threads=1)
    int8 = load_backend(bert_scaled_model_dir, device="cpu", threads=1, kind="torch-int8")
    return fp32, int8


def _items(output: list) -> set[str]:
    return {json.dumps(chain, ensure_ascii=False, sort_keys=True) for chain in output}


def test_transformer_linears_are_int8_and_heads_stay_fp32(backends):
    _, (int8, _) = backends
    assert int8.name == "torch-int8"
    model = int8.model
    for stack in (model.plm.encoder, model.crossattention):
        kinds = {type(m).__module__ for m in stack.modules() if "Linear" in type(m).__name__}
        assert kinds and all("quantized" in k for k in kinds), kinds
        assert not any(type(m) is nn.Linear for m in stack.modules())
    assert type(model.head_clsf) is nn.Linear and type(model.tail_clsf) is nn.Linear


def test_hidden_states_stay_close_to_fp32(backends):
    """Layer outputs, not the tiny model's nearly flat logits, show quantisation noise."""
    (fp32, tokenizer), (int8, _) = backends
    windows = [tokenizer("小林在杭州西湖边买了两杯龙井茶。")["input_ids"]]
    [s32] = fp32.encode(windows)
    [s8] = int8.encode(windows)
    assert s8.shape == s32.shape
    assert np.corrcoef(s32.numpy().ravel(), s8.numpy().ravel())[0, 1] > 0.99


def test_agreement_with_torch_fp32_on_the_examples(backends):
    (fp32, tokenizer), (int8, _) = backends
    examples = json.loads(EXAMPLES.read_text(encoding="utf-8"))["examples"]
    matched = union = 0
    for e in (e for e in examples if all(v is None for v in e["schema"].values())):
        want = _items(predict(fp32, tokenizer, e["text"], e["schema"]))
        got = _items(predict(int8, tokenizer, e["text"], e["schema"]))
        matched += len(got & want)
        union += len(got | want)
    assert union > 0
    assert matched / union >= INT8_MIN_SPAN_SHARE, f"{matched}/{union} spans identical"


def test_backend_setting_names_the_valid_kinds():
    assert Settings.from_env({"BACKEND": "onnx-int8"}).backend == "onnx-int8"
    with pytest.raises(SettingsError, match="BACKEND must be torch, torch-int8, onnx or onnx-int8"):
        Settings.from_env({"BACKEND": "tensorrt"})
