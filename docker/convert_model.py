"""The image's model stage: turn a ModelScope checkpoint directory into the directory we serve.

Why: the image ships the weights as safetensors only (memory-mapped at start-up, no pickle ever
opened in production, and no second copy of the weights), and a checkpoint that does not fit the
network fails the image build instead of a pod. The checks are the server's own strict loader
(app/model/network.py), run on the source and again on the result, whose tensors must be identical.

    python convert_model.py SRC_DIR DST_DIR
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from app.model.errors import CheckpointError
from app.model.network import (
    CONFIG_FILE,
    CONFIGURATION_FILE,
    SAFETENSORS_FILE,
    load_model,
)
from app.model.tokenizer import VOCAB_FILE, load_tokenizer

# Small files the tokenizer or the config may read, copied when the source has them.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)


def convert(src: Path, dst: Path) -> dict[str, torch.Tensor]:
    """Write DST with config, task file, tokenizer files and model.safetensors; return the
    tensors written. Raises CheckpointError with the loader's message on any misfit."""
    model = load_model(src)  # strict: names every missing/unexpected key and shape mismatch
    load_tokenizer(src)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    dst.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_FILE, CONFIGURATION_FILE, VOCAB_FILE, *TOKENIZER_FILES):
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    save_file(state, str(dst / SAFETENSORS_FILE), metadata={"format": "pt"})
    (dst / SAFETENSORS_FILE).chmod(0o644)  # save_file creates 0600; the server runs as non-root
    return state


def verify(dst: Path, expected: dict[str, torch.Tensor]) -> None:
    """Reload DST with the same strict loader and compare every tensor bit for bit."""
    reloaded = load_model(dst).state_dict()
    load_tokenizer(dst)
    if set(reloaded) != set(expected):
        raise CheckpointError(f"{dst}: converted checkpoint has different keys")
    differing = [k for k in sorted(expected) if not torch.equal(reloaded[k], expected[k])]
    if differing:
        raise CheckpointError(f"{dst}: converted tensors differ: {', '.join(differing[:10])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="checkpoint directory (ModelScope layout)")
    parser.add_argument("dst", type=Path, help="directory to write (served as MODEL_PATH)")
    args = parser.parse_args(argv)
    try:
        state = convert(args.src, args.dst)
        verify(args.dst, state)
    except CheckpointError as err:
        print(f"convert_model: {err}", file=sys.stderr)
        return 1
    params = sum(t.numel() for t in state.values())
    size = (args.dst / SAFETENSORS_FILE).stat().st_size
    print(
        f"convert_model: {len(state)} tensors, {params:,} parameters, {size:,} bytes -> {args.dst}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
