"""The network and its strict checkpoint loading, on the tiny random checkpoint."""

import json
import shutil

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel
from transformers.models.bert.modeling_bert import BertEncoder

from app.model.errors import CheckpointError
from app.model.network import load_model
from app.model.pipeline import PromptRow, split_windows, tokenize_text
from app.model.tokenizer import load_tokenizer
from app.runtime.torch_backend import TorchBackend, length_groups, load_backend
from app.tools.random_checkpoint import random_state_dict, write_random_checkpoint


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path):
    """A private copy of the tiny checkpoint that a test may break."""
    return shutil.copytree(tiny_model_dir, tmp_path / "model")


@pytest.fixture(scope="module")
def backend_and_tokenizer(tiny_model_dir):
    return load_backend(tiny_model_dir, device="cpu")


def _state(path):
    return torch.load(path / "pytorch_model.bin", weights_only=True)


def test_parameter_names_are_those_of_the_modelscope_checkpoint(tiny_model_dir):
    keys = set(load_model(tiny_model_dir).state_dict())
    for key in (
        "plm.embeddings.word_embeddings.weight",
        "plm.embeddings.position_embeddings.weight",
        "plm.embeddings.token_type_embeddings.weight",
        "plm.embeddings.LayerNorm.weight",
        "plm.encoder.layer.0.attention.self.query.weight",
        "plm.encoder.layer.0.attention.output.LayerNorm.bias",
        "plm.encoder.layer.0.intermediate.dense.weight",
        "plm.encoder.layer.0.output.dense.bias",
        "plm.pooler.dense.weight",
        "crossattention.layer.0.attention.self.key.bias",
        "crossattention.layer.5.output.LayerNorm.weight",
        "head_clsf.weight",
        "head_clsf.bias",
        "tail_clsf.weight",
        "tail_clsf.bias",
    ):
        assert key in keys
    # tiny: 1 shared layer + 6 cross layers, 16 tensors per layer
    assert sum(k.startswith("plm.encoder.layer.") for k in keys) == 16
    assert sum(k.startswith("crossattention.layer.") for k in keys) == 6 * 16
    assert not any(k.startswith("crossattention.layer.6.") for k in keys)


def test_loaded_weights_are_exactly_the_checkpoint(tiny_model_dir):
    state = _state(tiny_model_dir)
    model = load_model(tiny_model_dir)
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    assert not any(p.is_meta for p in model.parameters())
    assert not any(b.is_meta for b in model.buffers())
    assert not model.training


def test_safetensors_is_preferred_when_both_files_exist(model_copy, tmp_path):
    other = write_random_checkpoint(tmp_path / "other", "tiny", seed=7, fmt="safetensors")
    shutil.copy(other / "model.safetensors", model_copy / "model.safetensors")
    loaded = load_model(model_copy).state_dict()
    expected = random_state_dict("tiny", seed=7)
    assert torch.equal(loaded["head_clsf.weight"], expected["head_clsf.weight"])
    assert not torch.equal(loaded["head_clsf.weight"], _state(model_copy)["head_clsf.weight"])


def test_legacy_position_ids_buffer_is_accepted(model_copy):
    state = _state(model_copy)
    state["plm.embeddings.position_ids"] = torch.arange(512).expand((1, -1))
    torch.save(state, model_copy / "pytorch_model.bin")
    load_model(model_copy)


@pytest.mark.parametrize("name", ["config.json", "configuration.json", "vocab.txt"])
def test_missing_file_is_named(model_copy, name):
    (model_copy / name).unlink()
    with pytest.raises(CheckpointError, match=f"missing file {name}"):
        load_model(model_copy)


def test_missing_weights_names_both_files(model_copy):
    (model_copy / "pytorch_model.bin").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors or pytorch_model\.bin"):
        load_model(model_copy)


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nowhere")


def test_missing_key_is_named(model_copy):
    state = _state(model_copy)
    del state["crossattention.layer.3.attention.self.value.weight"]
    torch.save(state, model_copy / "pytorch_model.bin")
    with pytest.raises(
        CheckpointError, match=r"missing keys: crossattention\.layer\.3\.attention\.self\.value"
    ):
        load_model(model_copy)


def test_unexpected_key_is_named(model_copy):
    state = _state(model_copy)
    state["crossattention.layer.6.output.dense.weight"] = torch.zeros(2, 2)
    torch.save(state, model_copy / "pytorch_model.bin")
    with pytest.raises(
        CheckpointError, match=r"unexpected keys: crossattention\.layer\.6\.output\.dense\.weight"
    ):
        load_model(model_copy)


def test_wrong_shape_is_named(model_copy):
    state = _state(model_copy)
    state["head_clsf.weight"] = torch.zeros(2, 32)
    torch.save(state, model_copy / "pytorch_model.bin")
    with pytest.raises(
        CheckpointError, match=r"head_clsf\.weight has shape \(2, 32\), expected \(1, 32\)"
    ):
        load_model(model_copy)


def test_all_problems_are_reported_together(model_copy):
    state = _state(model_copy)
    del state["tail_clsf.bias"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, model_copy / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as err:
        load_model(model_copy)
    assert "tail_clsf.bias" in str(err.value) and "extra.weight" in str(err.value)


def test_pickled_code_is_never_executed(model_copy, tmp_path):
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"head_clsf.weight": Payload()}, model_copy / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_model(model_copy)
    assert not marker.exists()


def test_corrupt_weights_file(model_copy):
    (model_copy / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: cannot read weights"):
        load_model(model_copy)


def test_wrong_task_in_configuration_json(model_copy):
    (model_copy / "configuration.json").write_text(json.dumps({"task": "text-classification"}))
    with pytest.raises(CheckpointError, match="task is 'text-classification'"):
        load_model(model_copy)


def test_invalid_config_json(model_copy):
    (model_copy / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: cannot read JSON"):
        load_model(model_copy)


def test_too_few_layers_for_the_cross_stack(model_copy):
    config = json.loads((model_copy / "config.json").read_text())
    config["num_hidden_layers"] = 6
    (model_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="num_hidden_layers is 6"):
        load_model(model_copy)


def test_config_disagreeing_with_weights_names_the_shapes(model_copy):
    config = json.loads((model_copy / "config.json").read_text())
    config["hidden_size"] = 64
    (model_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"shape mismatch: .*expected"):
        load_model(model_copy)


def test_tokenizer_is_fast_lowercasing_and_splits_chinese(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    assert tokenizer.is_fast
    tokens = tokenizer("北京ABC")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(tokens) == [
        "[CLS]",
        "北",
        "京",
        "a",
        "##b",
        "##c",
        "[SEP]",
    ]


def test_backend_name_and_dtype_on_cpu(backend_and_tokenizer):
    backend, _ = backend_and_tokenizer
    assert isinstance(backend, TorchBackend)
    assert backend.name == "torch-fp32"
    assert next(backend.model.parameters()).dtype == torch.float32


def test_unknown_backend_kind(tiny_model_dir):
    with pytest.raises(ValueError, match="unknown backend kind"):
        load_backend(tiny_model_dir, kind="tensorrt")


# ---------------------------------------------------------------------------------------------
# agreement with ModelScope's own computation


def _reference_logits(model_dir, text_ids, prompts, offset):
    """ModelScope's fast_inference, rebuilt from transformers' stock BertModel with eager
    attention: the text padded to its window length, the prompts padded to the longest,
    [text ; prompts] through the cross stack with the extended additive mask, logits of the
    text positions."""
    state = _state(model_dir)
    config = BertConfig.from_json_file(model_dir / "config.json")
    config._attn_implementation = "eager"
    plm_config = BertConfig.from_dict(config.to_dict())
    plm_config.num_hidden_layers = config.num_hidden_layers - 6
    plm_config._attn_implementation = "eager"
    plm = BertModel(plm_config, add_pooling_layer=True).eval()
    plm.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("plm.")})
    cross_config = BertConfig.from_dict(config.to_dict())
    cross_config.num_hidden_layers = 6
    cross_config._attn_implementation = "eager"
    cross = BertEncoder(cross_config).eval()
    cross.load_state_dict(
        {
            k[len("crossattention.") :]: v
            for k, v in state.items()
            if k.startswith("crossattention.")
        }
    )
    head = torch.nn.Linear(config.hidden_size, 1)
    head.load_state_dict({"weight": state["head_clsf.weight"], "bias": state["head_clsf.bias"]})

    with torch.no_grad():
        ids = torch.tensor([text_ids + [0] * (offset - len(text_ids))])
        mask = (ids != 0).long() if len(text_ids) < offset else torch.ones_like(ids)
        text = plm(ids, attention_mask=mask)[0]
        width = max(len(p) for p in prompts)
        hint = torch.tensor([p + [0] * (width - len(p)) for p in prompts])
        hint_mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts])
        positions = torch.arange(width)[None, :] + offset
        hint_out = plm(
            hint,
            attention_mask=hint_mask,
            token_type_ids=torch.ones_like(hint),
            position_ids=positions,
        )[0]
        n = len(prompts)
        cat = torch.cat([text.expand(n, -1, -1), hint_out], dim=1)
        cat_mask = torch.cat([mask.expand(n, -1), hint_mask], dim=1)
        extended = (1.0 - cat_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        out = cross(cat, attention_mask=extended).last_hidden_state[:, : ids.shape[1]]
        return head(out).squeeze(-1)[:, : len(text_ids)].numpy()


@pytest.mark.parametrize("offset_pad", [0, 9], ids=["single-window", "padded-last-window"])
def test_logits_agree_with_modelscope_computation(
    tiny_model_dir, backend_and_tokenizer, offset_pad
):
    backend, tokenizer = backend_and_tokenizer
    text_ids = tokenize_text(tokenizer, "在北京冬奥会自由式中，谷爱凌以188.25分获得金牌。").ids
    offset = len(text_ids) + offset_pad  # a padded last window: prompts start after the pad
    prompts = tokenizer(["人物: ", "人物: 谷爱凌, 比赛项目(赛事名称): "])["input_ids"]
    (state,) = backend.encode([text_ids])
    got = backend.score([PromptRow(state, p, offset) for p in prompts])
    expected = _reference_logits(tiny_model_dir, text_ids, prompts, offset)
    for (head, _), ref in zip(got, expected, strict=True):
        np.testing.assert_allclose(head, ref, atol=1e-5)


def test_batched_execution_equals_one_by_one(backend_and_tokenizer):
    backend, tokenizer = backend_and_tokenizer
    texts = ["北京的冬天很冷。", "7月28日，天津泰达在德比战中以0-1负于天津天海。", "x" * 3]
    windows = [tokenize_text(tokenizer, t).ids for t in texts]
    long_windows, long_offset = split_windows(tokenize_text(tokenizer, "长文本" * 200).ids)
    windows += long_windows
    batched_states = backend.encode(windows)
    single_states = [backend.encode([w])[0] for w in windows]
    for a, b in zip(batched_states, single_states, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)

    prompts = tokenizer(
        ["人物: ", "地理位置: ", "胜负(事件触发词): 负, 败者: ", "a: " * 60], truncation=True
    )["input_ids"]
    offsets = [len(w) for w in windows[:3]] + [long_offset] * len(long_windows)
    rows = [
        PromptRow(state, p, off)
        for p in prompts
        for state, off in zip(single_states, offsets, strict=True)
    ]
    batched = backend.score(rows)
    for row, (head, tail) in zip(rows, batched, strict=True):
        ((head1, tail1),) = backend.score([row])
        assert head.shape == head1.shape == (row.text_state.shape[0],)
        np.testing.assert_allclose(head, head1, atol=1e-5)
        np.testing.assert_allclose(tail, tail1, atol=1e-5)


def test_length_groups_bound_padding_and_cover_every_row():
    lengths = [384, 12, 57, 60, 384, 200, 13, 58, 1]
    groups = length_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        sizes = [lengths[i] for i in group]
        assert len(group) == 1 or max(sizes) * len(sizes) <= 1.25 * sum(sizes)
    assert any({2, 3, 7} <= set(g) for g in groups)  # 57, 58, 60 tokens: one batch
    assert not any({0, 1} <= set(g) for g in groups)  # 384 and 12 tokens: never padded together
    assert length_groups([]) == []


def test_padding_of_counts_each_group_padded_to_its_longest():
    from app.model.padding import padding_of

    lengths = [10, 12, 100, 3]
    assert padding_of(lengths, [[0, 1], [2], [3]]) == 2  # 10 padded to 12
    assert padding_of(lengths, [[0, 1, 2, 3]]) == 4 * 100 - 125
    assert padding_of(lengths, []) == 0


def test_cuda_requested_without_cuda_is_a_clear_error(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        load_backend(tiny_model_dir, device="cuda")
