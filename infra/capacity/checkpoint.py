"""The full-size random checkpoint a measurement runs on, and its ONNX graphs, made when missing
or stale: `python -m app.tools.random_checkpoint` and `python -m app.tools.export_onnx` run as
commands (deployment code never imports the model or torch). The planner and the benchmark use it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
DEFAULT_MODEL = REPO / ".models" / "base"
# What the int8 graphs are made from, under app/: the exporter and its calibration set (the
# examples). Graphs older than any of them are stale.
EXPORTER_FILES = (
    "tools/export_onnx.py",
    "tools/onnx_fusion.py",
    "tools/onnx_int8.py",
    "tools/cases.py",
    "model/examples.json",
)


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.is_file() else 0.0


def ensure_model(model: Path, need_onnx: bool, examples: str | Path | None = None) -> dict:
    """Make the full-size random checkpoint and its ONNX graphs when missing (timed). The
    project's examples are in the int8 calibration set; a user's own `examples` file joins them."""
    made = {}
    if not (model / "config.json").is_file():
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "app.tools.random_checkpoint",
                "--size",
                "base",
                "--out",
                str(model),
            ],
            check=True,
            cwd=REPO,
        )
        made["checkpoint_s"] = time.perf_counter() - start
    graph = model / "onnx" / "cross.int8.onnx"
    weights = max((model / n for n in ("pytorch_model.bin", "model.safetensors")), key=_mtime)
    # Stale too when the exporter changed (fusions, the int8 recipe): graphs of an older one.
    makers = [weights, *(REPO / "app" / n for n in EXPORTER_FILES)]
    if need_onnx and _mtime(graph) < max(map(_mtime, makers)):  # missing, or older
        start = time.perf_counter()
        export = ["app.tools.export_onnx", "--model-path", str(model), "--int8"]
        own = ["--examples", str(examples)] if examples else []
        subprocess.run([sys.executable, "-m", *export, *own], check=True, cwd=REPO)
        made["onnx_export_s"] = time.perf_counter() - start
    return made
