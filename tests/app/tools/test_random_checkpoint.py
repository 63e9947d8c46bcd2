"""The random checkpoint generator: ModelScope layout, determinism, both sizes, both formats."""

import json

import torch

from app.model.network import SiameseUniNLU, load_model, read_config
from app.model.tokenizer import load_tokenizer
from app.tools.random_checkpoint import (
    VOCAB_SIZE,
    build_vocab,
    main,
    model_config,
    random_state_dict,
    write_random_checkpoint,
)


def test_directory_layout_is_the_modelscope_one(tiny_model_dir):
    names = sorted(p.name for p in tiny_model_dir.iterdir())
    assert names == ["config.json", "configuration.json", "pytorch_model.bin", "vocab.txt"]
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "bert" and config["vocab_size"] == VOCAB_SIZE
    assert config["num_hidden_layers"] == 7  # 1 shared + 6 cross
    assert json.loads((tiny_model_dir / "configuration.json").read_text())["task"] == "siamese-uie"


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = (random_state_dict("tiny", s) for s in (3, 3, 4))
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(
        a["crossattention.layer.0.attention.self.query.weight"],
        c["crossattention.layer.0.attention.self.query.weight"],
    )


def test_safetensors_format_replaces_the_bin(tmp_path):
    out = write_random_checkpoint(tmp_path, "tiny", seed=2, fmt="bin")
    write_random_checkpoint(out, "tiny", seed=2, fmt="safetensors")
    assert (out / "model.safetensors").is_file() and not (out / "pytorch_model.bin").exists()
    loaded = load_model(out).state_dict()
    expected = random_state_dict("tiny", seed=2)
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())


def test_vocab_covers_chinese_ascii_digits_and_full_width_punctuation(tiny_model_dir):
    vocab = build_vocab()
    assert len(vocab) == len(set(vocab)) == VOCAB_SIZE == 21128
    assert vocab[0] == "[PAD]"
    assert {"[UNK]", "[CLS]", "[SEP]", "[MASK]", "，", "。", "：", "（", "“", "、", "##7"} <= set(
        vocab
    )
    tokenizer = load_tokenizer(tiny_model_dir)
    text = "谷口清太郎在日本筹款2.7亿日元，共69家（企业）、Ok！"
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])
    assert "[UNK]" not in tokens


def test_base_size_has_the_real_model_shapes():
    config = model_config("base")
    assert (config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]) == (
        768,
        12,
        3072,
    )
    with torch.device("meta"):
        model = SiameseUniNLU(read_config_from_dict(config))
    n_params = sum(p.numel() for p in model.parameters())
    assert 102_000_000 < n_params < 103_000_000  # BERT-base Chinese with pooler + 2 heads
    assert len(model.plm.encoder.layer) == 6 and len(model.crossattention.layer) == 6


def read_config_from_dict(config):
    from transformers import BertConfig

    return BertConfig(**{k: v for k, v in config.items() if k != "model_type"})


def test_random_heads_produce_spans(tiny_model_dir):
    """The calibrated biases put a share of tokens above the threshold on real text."""
    from app.model.pipeline import predict
    from app.runtime.torch_backend import load_backend

    backend, tokenizer = load_backend(tiny_model_dir, device="cpu")
    text = "7月28日，天津泰达在德比战中以0-1负于天津天海。"
    assert predict(backend, tokenizer, text, {"胜者": None, "败者": None, "时间": None})


def test_command_line_writes_a_loadable_checkpoint(tmp_path, capsys):
    main(["--size", "tiny", "--seed", "5", "--out", str(tmp_path / "m"), "--format", "safetensors"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "m")
    read_config(tmp_path / "m")
    load_model(tmp_path / "m")
