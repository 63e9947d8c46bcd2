"""docker/prune_venv.py: what it deletes from the lean image's venv, and that a real server
(torch unimportable, int8 graphs, every route) opens none of it."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docker"))
import prune_venv  # noqa: E402

KEPT = ["onnxruntime/capi/onnxruntime_pybind11_state.so", "transformers/models/bert/x.py"]


def _fake_site(tmp_path: Path) -> Path:
    site = tmp_path / "site-packages"
    files = [
        "onnxruntime/capi/libonnxruntime.so.1.32.0",
        "onnxruntime/transformers/optimizer.py",
        "onnxruntime/quantization/q.py",
        "onnxruntime/tools/t.py",
        "hf_xet/x.so",
        "hf_xet-1.8.0.dist-info/METADATA",
        "setuptools/s.py",
        "setuptools-65.5.0.dist-info/METADATA",
        "pkg_resources/p.py",
        "_distutils_hack/d.py",
        "distutils-precedence.pth",
        "transformers/models/__init__.py",
        "transformers/models/auto/a.py",
        "transformers/models/encoder_decoder/e.py",
        "transformers/models/llama/modeling_llama.py",
        *KEPT,
    ]
    for name in files:
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_bytes(b"x" * 10)
    return site


def test_prune_deletes_the_listed_paths_and_keeps_the_rest(tmp_path):
    site = _fake_site(tmp_path)
    assert prune_venv.prune(site) == 12 * 10
    left = sorted(str(p.relative_to(site)) for p in site.rglob("*") if p.is_file())
    assert left == sorted(
        [
            *KEPT,
            "transformers/models/__init__.py",
            "transformers/models/auto/a.py",
            "transformers/models/encoder_decoder/e.py",
        ]
    )


def test_a_stale_pattern_fails_the_build(tmp_path):
    site = _fake_site(tmp_path)
    (site / "hf_xet" / "x.so").unlink()
    (site / "hf_xet").rmdir()
    with pytest.raises(ValueError, match="'hf_xet' matches nothing"):
        prune_venv.prune_targets(site)


@pytest.fixture(scope="module")
def int8_model(tiny_model_dir) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "app.tools.export_onnx",
            "--model-path",
            str(tiny_model_dir),
            "--int8",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return Path(tiny_model_dir)


def test_the_lean_server_opens_nothing_that_is_pruned(int8_model, tmp_path):
    from tests.app.conftest import free_port

    env = {
        "MODEL_PATH": str(int8_model),
        "BACKEND": "onnx-int8",
        "PORT": str(free_port()),
        "TORCH_THREADS": "1",
        "PATH": "/usr/bin:/bin",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "opened_files.py")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    opened = [Path(line) for line in done.stdout.splitlines()]
    site = Path(sysconfig.get_path("purelib")).resolve()
    assert any(site in p.parents for p in opened)  # the listing saw the venv's own files
    assert any("onnxruntime" in p.parts for p in opened) and not any(
        "torch" in p.parts for p in opened
    )
    pruned = [t.resolve() for t in prune_venv.prune_targets(site, strict=False)]
    assert pruned  # this venv holds prunable paths (transformers' other model families at least)
    # _distutils_hack is imported at start-up only by distutils-precedence.pth, pruned with it.
    hit = [
        str(p)
        for p in opened
        if any(p == t or t in p.parents for t in pruned) and "_distutils_hack" not in p.parts
    ]
    assert hit == []
