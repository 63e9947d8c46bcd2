"""Delete from the lean (ONNX) image's virtualenv the files serving never opens.

Each entry below was found by serving in a virtualenv of docker/requirements-onnx.txt (torch
unimportable, int8 graphs, /predict, /predict/batch, /metrics, /, /docs and its assets) and
listing what the process opened: imported modules, mapped shared libraries, open files
(docker/opened_files.py; tests/docker/test_prune_venv.py repeats that check on every run).
A pattern that matches nothing fails the build: the list must follow the pins.

Usage: python prune_venv.py SITE_PACKAGES
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

# (glob relative to site-packages, why the runtime never opens it)
PRUNE: list[tuple[str, str]] = [
    (
        "onnxruntime/capi/libonnxruntime.so.*",
        "ONNX Runtime's C API library: the Python module links the runtime statically (35 MB)",
    ),
    ("onnxruntime/transformers", "the transformer graph optimiser: export time only"),
    ("onnxruntime/quantization", "quantisation tools: export time only"),
    ("onnxruntime/tools", "model conversion tools"),
    ("hf_xet", "the Hugging Face Xet download client: the image never downloads (HF_HUB_OFFLINE)"),
    ("hf_xet-*.dist-info", "its metadata, so nothing believes it installed"),
    ("setuptools", "build tool the venv brings along; nothing is built at run time"),
    ("setuptools-*.dist-info", "its metadata"),
    ("pkg_resources", "setuptools' runtime half, imported by nothing here"),
    ("_distutils_hack", "setuptools' distutils shim"),
    ("distutils-precedence.pth", "loads that shim at start-up"),
]
# transformers' model families: only the tokenizer's path is imported (auto, bert and what auto
# pulls in); the other families are about 49 MB of modelling code for torch, which the image
# does not have.
TRANSFORMERS_MODELS = "transformers/models"
TRANSFORMERS_KEEP = {"__init__.py", "auto", "bert", "encoder_decoder"}


def prune_targets(site: Path, strict: bool = True) -> list[Path]:
    """Every path to delete; `strict`: a ValueError names a pattern that matches nothing."""
    targets: list[Path] = []
    for pattern, _why in PRUNE:
        found = sorted(site.glob(pattern))
        if strict and not found:
            raise ValueError(f"prune pattern {pattern!r} matches nothing in {site}")
        targets += found
    models = site / TRANSFORMERS_MODELS
    if strict and not all((models / keep).exists() for keep in TRANSFORMERS_KEEP):
        raise ValueError(f"{models} lacks one of {sorted(TRANSFORMERS_KEEP)}")
    if models.is_dir():
        targets += sorted(p for p in models.iterdir() if p.name not in TRANSFORMERS_KEEP)
    return targets


def prune(site: Path) -> int:
    """Delete the targets; returns the bytes freed."""
    freed = 0
    for path in prune_targets(site):
        if path.is_dir():
            freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path)
        else:
            freed += path.stat().st_size
            path.unlink()
    return freed


if __name__ == "__main__":
    freed = prune(Path(sys.argv[1]))
    print(f"prune_venv: {freed / 1e6:.0f} MB the runtime never opens removed")
