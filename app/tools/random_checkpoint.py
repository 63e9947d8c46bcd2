"""Random SiameseUniNLU checkpoints in the exact ModelScope directory layout.

Tests need a real checkpoint without network access, and benchmarks need one with the real
model's compute. Both come from here, deterministic by seed:
- `tiny`: 7 layers (1 shared + 6 cross), hidden 32; seconds to make, for tests;
- `base`: the real shapes (12 layers, hidden 768, vocab 21128), for benchmarks.
The pointer-head biases are set so that random weights still produce spans (so tests exercise
decoding and recursion through the schema).

    python -m app.tools.random_checkpoint --size tiny|base --seed N --out DIR [--format
    bin|safetensors]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from app.model.network import (
    BIN_FILE,
    CONFIG_FILE,
    CONFIGURATION_FILE,
    SAFETENSORS_FILE,
    TASK,
    SiameseUniNLU,
)
from app.model.tokenizer import VOCAB_FILE

VOCAB_SIZE = 21128
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

SIZES = {
    "tiny": {
        "hidden_size": 32,
        "num_hidden_layers": 7,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    "base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
}
# Weight scales per size (embeddings, attention query/key, attention value/output, the rest).
# Tiny: fairly sharp attention with small value/output and feed-forward weights keeps each
# token's identity in the residual stream while the prompt still shifts the logits token by
# token, so spans differ between types and levels (and the numerics stay well conditioned).
_WEIGHT_STD = {
    "tiny": {"embeddings": 0.1, "query_key": 0.3, "value_output": 0.15, "other": 0.02},
    "base": {"embeddings": 0.02, "query_key": 0.02, "value_output": 0.02, "other": 0.02},
}
# Share of calibration tokens whose head (tail) logit exceeds the 0.5 threshold: few tokens start
# a span and many can end one, so spans are short. Tiny: frequent spans, so tests exercise
# decoding and recursion; base: a few spans per type, about what the real model finds, so the
# benchmark's nested schemas fan out as in production rather than into hundreds of chains.
_HEAD_RATE = {"tiny": 0.15, "base": 0.03}
_TAIL_RATE = 0.5
_CALIBRATION_SEED = 12345


def build_vocab() -> list[str]:
    """A BERT-Chinese-like vocabulary of exactly 21128 entries: special tokens, lower-case ASCII,
    full-width and CJK punctuation, CJK ideographs, and `##` continuations for digits and
    letters (so numbers and Latin words split into word pieces, as with the real vocab)."""
    tokens: list[str] = list(SPECIAL_TOKENS)
    ascii_chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    tokens += ascii_chars
    tokens += ["##" + c for c in "0123456789abcdefghijklmnopqrstuvwxyz"]
    tokens += [chr(c) for c in range(0xFF01, 0xFF5F) if not chr(c).isalpha()]  # full-width
    tokens += [chr(c) for c in range(0x3001, 0x3020)]  # CJK punctuation 、。〈〉《》「」…
    tokens += [chr(c) for c in range(0x2010, 0x2028)]  # ‐ – — ‘ ’ “ ” … etc.
    room = VOCAB_SIZE - len(tokens)
    tokens += [chr(c) for c in range(0x4E00, 0x4E00 + room)]  # CJK ideographs, most common first
    assert len(tokens) == VOCAB_SIZE and len(set(tokens)) == VOCAB_SIZE
    return tokens


def model_config(size: str) -> dict:
    """config.json as published: the Hugging Face BERT configuration."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}, expected one of {sorted(SIZES)}")
    return {
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512,
        "model_type": "bert",
        "pad_token_id": 0,
        "type_vocab_size": 2,
        "vocab_size": VOCAB_SIZE,
        **SIZES[size],
    }


def task_configuration() -> dict:
    """configuration.json: the ModelScope task file."""
    return {
        "framework": "pytorch",
        "task": TASK,
        "model": {"type": "bert"},
        "pipeline": {"type": TASK},
        "preprocessor": {"type": "siamese-uie-preprocessor"},
    }


def random_state_dict(size: str = "tiny", seed: int = 0) -> dict[str, torch.Tensor]:
    """Every parameter of the network, random but reproducible, under its checkpoint name."""
    config = model_config(size)
    with torch.device("meta"):
        model = SiameseUniNLU(_bert_config(config))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    std = _WEIGHT_STD[size]
    hidden = config["hidden_size"]
    state = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if "LayerNorm" in name:
            value = torch.ones(shape) if name.endswith("weight") else torch.zeros(shape)
        elif name.startswith(("head_clsf", "tail_clsf")):
            if name.endswith("weight"):
                value = torch.randn(shape, generator=gen) / hidden**0.5
            else:
                value = torch.zeros(shape)  # set by _calibrate_heads
        elif name.endswith("bias"):
            value = torch.randn(shape, generator=gen) * std["other"] * 0.1
        else:
            value = torch.randn(shape, generator=gen) * std[_weight_kind(name)]
        state[name] = value.contiguous()
    _calibrate_heads(model, state, config, _HEAD_RATE[size])
    return state


def _bert_config(config: dict):
    from transformers import BertConfig

    return BertConfig(**{k: v for k, v in config.items() if k != "model_type"})


@torch.inference_mode()
def _calibrate_heads(model: SiameseUniNLU, state: dict, config: dict, head_rate: float) -> None:
    """Set the pointer-head biases so that a fixed share of tokens passes the threshold on a
    fixed random text and prompts: random weights shift the logits by an amount that differs
    from seed to seed, which would otherwise give either no spans or spans everywhere."""
    model.load_state_dict(state, assign=True)
    model.reset_buffers()
    model.eval()
    gen = torch.Generator().manual_seed(_CALIBRATION_SEED)
    n_text, n_prompts, n_prompt = 96, 8, 8
    first = len(SPECIAL_TOKENS)
    text = torch.randint(first, config["vocab_size"], (1, n_text), generator=gen)
    prompts = torch.randint(first, config["vocab_size"], (n_prompts, n_prompt), generator=gen)
    full = torch.ones((n_prompts, n_text + n_prompt), dtype=torch.bool)
    hidden = model.encode(text, full[:1, :n_text], 0, torch.arange(n_text)[None, :])
    positions = (n_text + torch.arange(n_prompt))[None, :].expand(n_prompts, -1)
    prompt_hidden = model.encode(prompts, full[:, :n_prompt], 1, positions)
    packed = torch.cat((hidden.expand(n_prompts, -1, -1), prompt_hidden), dim=1)
    head, tail = model.cross(packed, full)
    for name, logits, rate in (("head", head, head_rate), ("tail", tail, _TAIL_RATE)):
        cut = torch.quantile(logits[:, :n_text].flatten().double(), 1.0 - rate).item()
        state[f"{name}_clsf.bias"] = torch.full((1,), 0.5 - cut, dtype=torch.float32)


def _weight_kind(name: str) -> str:
    if ".embeddings." in name:
        return "embeddings"
    if ".attention.self.query." in name or ".attention.self.key." in name:
        return "query_key"
    if ".attention.self.value." in name or ".attention.output.dense." in name:
        return "value_output"
    return "other"


def write_random_checkpoint(
    out_dir: str | Path, size: str = "tiny", seed: int = 0, fmt: str = "bin"
) -> Path:
    """Write config.json, configuration.json, vocab.txt and the weights into `out_dir`."""
    if fmt not in ("bin", "safetensors"):
        raise ValueError(f"unknown format {fmt!r}, expected 'bin' or 'safetensors'")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = random_state_dict(size, seed)
    (out / CONFIG_FILE).write_text(json.dumps(model_config(size), indent=2) + "\n")
    (out / CONFIGURATION_FILE).write_text(json.dumps(task_configuration(), indent=2) + "\n")
    (out / VOCAB_FILE).write_text("\n".join(build_vocab()) + "\n", encoding="utf-8")
    stale = out / (BIN_FILE if fmt == "safetensors" else SAFETENSORS_FILE)
    stale.unlink(missing_ok=True)  # one weights file, so the loader's choice is unambiguous
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(out / SAFETENSORS_FILE))
    else:
        torch.save(state, out / BIN_FILE)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m app.tools.random_checkpoint", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="directory to write (created if missing)")
    parser.add_argument("--format", choices=("bin", "safetensors"), default="bin")
    args = parser.parse_args(argv)
    print(write_random_checkpoint(args.out, args.size, args.seed, args.format))


if __name__ == "__main__":
    main()
