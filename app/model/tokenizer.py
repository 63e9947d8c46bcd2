"""The tokenizer ModelScope uses for this model, loaded strictly offline and without torch.

Its own module so that the torch backend and the torch-free ONNX backend share one loader.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from app.model.errors import CheckpointError

VOCAB_FILE = "vocab.txt"


def load_tokenizer(model_dir: str | Path) -> PreTrainedTokenizerBase:
    """AutoTokenizer (fast, from vocab.txt) as the ModelScope pipeline builds it; offsets need
    the fast one."""
    model_dir = Path(model_dir)
    if not (model_dir / VOCAB_FILE).is_file():
        raise CheckpointError(f"missing file {VOCAB_FILE} in model directory {model_dir}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(model_dir), use_fast=True, local_files_only=True
        )
    except Exception as err:  # a broken vocab or config is a checkpoint problem
        raise CheckpointError(f"{model_dir}: cannot load the tokenizer: {err}") from err
    if not tokenizer.is_fast:
        raise CheckpointError(f"{model_dir}: expected a fast tokenizer (offsets are needed)")
    return tokenizer
