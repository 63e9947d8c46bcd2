"""The model tests' backend: the session's tiny checkpoint on torch, loaded once per module."""

import pytest

from app.runtime.torch_backend import load_backend


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_backend(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def backend(loaded):
    return loaded[0]


@pytest.fixture(scope="module")
def tokenizer(loaded):
    return loaded[1]
