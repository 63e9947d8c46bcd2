"""The serving tests' backend: the session's tiny checkpoint on torch, one thread, per module."""

import pytest

from app.runtime.torch_backend import load_backend


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_backend(tiny_model_dir, device="cpu", threads=1)
