"""The `peer` configuration's virtualenv: ModelScope and its pinned dependencies, apart from the
project's (ModelScope needs transformers < 5). Made once, reused while its requirements file is
unchanged (a stamp holds the file's hash)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO / "bench" / "requirements-peer.txt"
SERVER = REPO / "bench" / "peer_server.py"
DEFAULT_VENV = REPO / ".venv-peer"
LOCAL_WHEELS = Path("/opt/wheels")  # the local CPU torch wheel on these machines
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _stamp(requirements: Path) -> str:
    return hashlib.sha256(requirements.read_bytes()).hexdigest()


def pip_sources() -> list[str]:
    """Where pip finds torch's +cpu build: the local wheel directory, else PyTorch's CPU index.
    The pin carries `+cpu`, so no source can ever give a CUDA build."""
    if LOCAL_WHEELS.is_dir():
        return ["--find-links", str(LOCAL_WHEELS)]
    return ["--extra-index-url", TORCH_CPU_INDEX]


def ensure_venv(venv: Path = DEFAULT_VENV, requirements: Path = REQUIREMENTS) -> Path:
    """The peer venv's python, created or brought up to date with `requirements`."""
    python = venv / "bin" / "python"
    stamp = venv / ".requirements.sha256"
    want = _stamp(requirements)
    if python.is_file() and stamp.is_file() and stamp.read_text().strip() == want:
        return python
    print(f"   building the peer virtualenv {venv} (ModelScope, transformers < 5) ...", flush=True)
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            *(str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
            *pip_sources(),
            *("-r", str(requirements)),
        ],
        check=True,
    )
    stamp.write_text(want + "\n")
    return python


def command(python: Path, workers: int = 2) -> list[str]:
    """How the bench starts the peer server, the seed's way: uvicorn with `workers` processes.
    ServerProcess fills in {host} and {port}; MODEL_PATH comes from the environment."""
    return [
        *(str(python), "-m", "uvicorn", "peer_server:app", "--app-dir", str(SERVER.parent)),
        *("--workers", str(workers), "--host", "{host}", "--port", "{port}"),
        *("--log-level", "warning"),
    ]
