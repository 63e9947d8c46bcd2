"""Shared fixtures: one fixed-seed tiny checkpoint per test session."""

import pytest

from app.random_checkpoint import write_random_checkpoint

TINY_SEED = 1  # a seed whose random heads give spans on every level of the examples


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random SiameseUniNLU checkpoint in the ModelScope layout (pytorch_model.bin)."""
    return write_random_checkpoint(tmp_path_factory.mktemp("tiny-model"), "tiny", seed=TINY_SEED)
