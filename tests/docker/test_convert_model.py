"""docker/convert_model.py, the image's model stage, on real tiny checkpoints."""

from __future__ import annotations

import importlib.util
import shutil
import stat
from pathlib import Path

import pytest
import torch

from app.model.network import load_model

SCRIPT = Path(__file__).resolve().parents[2] / "docker" / "convert_model.py"


@pytest.fixture(scope="module")
def convert_model():
    spec = importlib.util.spec_from_file_location("convert_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_converts_to_safetensors_with_identical_tensors(convert_model, tiny_model_dir, tmp_path):
    dst = tmp_path / "uninlu"
    assert convert_model.main([str(tiny_model_dir), str(dst)]) == 0
    files = sorted(p.name for p in dst.iterdir())
    assert files == ["config.json", "configuration.json", "model.safetensors", "vocab.txt"]
    # The server runs as uid 1001 and the files belong to root: they must be world-readable.
    assert stat.S_IMODE((dst / "model.safetensors").stat().st_mode) == 0o644
    source, converted = load_model(tiny_model_dir).state_dict(), load_model(dst).state_dict()
    assert source.keys() == converted.keys()
    assert all(torch.equal(source[k], converted[k]) for k in source)


def test_a_checkpoint_that_does_not_fit_fails_naming_the_key(
    convert_model, tiny_model_dir, tmp_path, capsys
):
    src = tmp_path / "src"
    shutil.copytree(tiny_model_dir, src)
    state = torch.load(src / "pytorch_model.bin", weights_only=True)
    state["plm.extra.weight"] = torch.zeros(2)
    del state["head_clsf.bias"]
    torch.save(state, src / "pytorch_model.bin")
    assert convert_model.main([str(src), str(tmp_path / "dst")]) == 1
    err = capsys.readouterr().err
    assert "plm.extra.weight" in err and "head_clsf.bias" in err
    assert not (tmp_path / "dst" / "model.safetensors").exists()


def test_an_empty_model_context_is_a_clear_error(convert_model, tmp_path, capsys):
    """What a build with neither a `model` context nor ModelScope output would see."""
    (tmp_path / "empty").mkdir()
    assert convert_model.main([str(tmp_path / "empty"), str(tmp_path / "dst")]) == 1
    assert "config.json" in capsys.readouterr().err
