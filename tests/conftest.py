"""Shared fixtures: one fixed-seed tiny checkpoint per test session."""

import pytest

from app.tools.random_checkpoint import write_random_checkpoint

TINY_SEED = 4  # a seed whose random heads give spans at both levels of most examples


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random SiameseUniNLU checkpoint in the ModelScope layout (pytorch_model.bin)."""
    return write_random_checkpoint(tmp_path_factory.mktemp("tiny-model"), "tiny", seed=TINY_SEED)


@pytest.fixture(scope="session")
def bert_scaled_model_dir(tmp_path_factory):
    """The tiny checkpoint with BERT's initial weight scale (std 0.02) in every weight matrix
    but the heads. The tiny checkpoint's large weights make attention so sharp that any
    quantisation noise flips spans; at this scale int8 behaves as on the full-size model, so
    int8 agreement thresholds measured on it mean something."""
    import torch

    out = write_random_checkpoint(tmp_path_factory.mktemp("scaled-model"), "tiny", seed=TINY_SEED)
    path = out / "pytorch_model.bin"
    state = torch.load(path, weights_only=True)
    gen = torch.Generator().manual_seed(TINY_SEED)
    for name, value in state.items():
        if name.endswith(".weight") and "LayerNorm" not in name and "_clsf" not in name:
            state[name] = torch.randn(value.shape, generator=gen) * 0.02
    torch.save(state, path)
    return out
