"""Static properties of docker/Dockerfile, .dockerignore and app/requirements.txt.

hadolint and checkov run in `make lint`; these pin what they cannot know: the runtime stage's
contract with Kubernetes (uid, port, probes, read-only root), the build-arg list that
infra/image.py reads, and that the runtime pins never drift from requirements.txt.
`make image-test` (docker/image-test.sh) builds and runs the image for real.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

import pytest

from app.serving.settings import REMOVED, Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
RUNTIME_PACKAGES = {
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy",
    "fastapi",
    "uvicorn",
    "pydantic",
    "python-json-logger",
    "prometheus-client",
}
TEST_TOOLS = {"pytest", "hypothesis", "schemathesis", "ruff", "playwright", "pytest-timeout"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"{path.name}: {line!r} is not pinned with =="
            pins[_norm(name)] = version
    return pins


def _instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            out.append((keyword.upper(), " ".join(args.split())))
    return out


def _stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current = None
    for keyword, args in _instructions():
        if keyword == "FROM":
            current = args.split()[-1]
            stages[current] = [(keyword, args)]
        elif current:
            stages[current].append((keyword, args))
    return stages


def _runtime(target: str = "runtime") -> list[tuple[str, str]]:
    """A runtime target's instructions, its parent stage runtime-base's included."""
    stages = _stages()
    assert stages[target][0] == ("FROM", f"runtime-base AS {target}")
    return stages["runtime-base"] + stages[target][1:]


def test_runtime_pins_are_requirements_pins():
    app_pins, pins = _pins(ROOT / "app" / "requirements.txt"), _pins(ROOT / "requirements.txt")
    assert set(app_pins) >= RUNTIME_PACKAGES
    assert not TEST_TOOLS & set(app_pins)
    # setuptools is torch's dependency; the dev venv gets it from `python -m venv`.
    drift = {
        n: (v, pins.get(n)) for n, v in app_pins.items() if n != "setuptools" and pins.get(n) != v
    }
    assert not drift, f"app/requirements.txt differs from requirements.txt: {drift}"


def test_runtime_is_the_default_target():
    assert list(_stages())[-1] == "runtime"


@pytest.mark.parametrize("target", ["runtime", "runtime-onnx"])
def test_runtime_runs_as_non_root(target):
    runtime = _runtime(target)
    assert runtime[0] == ("FROM", "base AS runtime-base")
    assert ("FROM", "python:${PYTHON_TAG} AS base") in _instructions()
    assert ("ARG", "PYTHON_TAG=3.11-slim-bookworm") in _instructions()
    users = [args for keyword, args in runtime if keyword == "USER"]
    assert users == ["1001:1001"]
    assert ("EXPOSE", "7860") in runtime
    assert ("CMD", '["python", "-m", "app"]') in runtime


@pytest.mark.parametrize(
    ("target", "deps", "model", "bytecode"),
    [
        ("runtime", "deps", "model-convert /models/uninlu", "bytecode"),
        ("runtime-onnx", "deps-onnx", "model-onnx /models/uninlu-onnx", "bytecode-onnx"),
    ],
)
def test_runtime_holds_only_venv_model_app_and_bytecode(target, deps, model, bytecode):
    copies = [args for keyword, args in _runtime(target) if keyword in ("COPY", "ADD")]
    assert copies == [
        f"--from={deps} /opt/venv /opt/venv",
        f"--from={model} /models/uninlu",
        "app/ /srv/app/",
        f"--from={bytecode} /opt/pycache /opt/pycache",
    ]
    runs = " ".join(args for keyword, args in _runtime(target) if keyword == "RUN")
    assert not re.search(r"apt-get|pip |gcc|curl|wget", runs), runs


def test_the_onnx_runtime_selects_the_onnx_backend():
    assert ("ARG", "ONNX_BACKEND=onnx") in _runtime("runtime-onnx")
    assert ("ENV", "BACKEND=${ONNX_BACKEND}") in _runtime("runtime-onnx")


@pytest.mark.parametrize("target", ["runtime", "runtime-onnx"])
def test_runtime_environment_suits_a_read_only_root(target):
    env = " ".join(args for keyword, args in _runtime(target) if keyword == "ENV")
    for setting in (
        "MODEL_PATH=/models/uninlu",
        "HOME=/tmp",
        "PYTHONDONTWRITEBYTECODE=1",
        "PYTHONPYCACHEPREFIX=/opt/pycache",
        "HF_HUB_OFFLINE=1",
        "PORT=7860",
    ):
        assert setting in env.split(), setting


@pytest.mark.parametrize("target", ["runtime", "runtime-onnx"])
def test_runtime_threads_sleep_when_idle(target):
    """The image's thread settings, as app/serving/settings.py reads them (issue 14: no collapse
    when a
    neighbour takes a core)."""
    env = dict(
        item.split("=", 1)
        for args in (args for keyword, args in _runtime(target) if keyword == "ENV")
        for item in args.split()
    )
    names = ("OMP_WAIT_POLICY", "INTRA_OP_SPINNING")
    threads = {k: v for k, v in env.items() if k in names}
    settings = Settings.from_env(threads)
    assert (settings.omp_wait_policy, settings.intra_op_spinning) == ("PASSIVE", False)
    assert (env["OMP_WAIT_POLICY"], env["INTRA_OP_SPINNING"]) == ("PASSIVE", "false")
    assert not env.keys() & REMOVED.keys()  # a removed setting would stop the server


def test_healthcheck_probes_health_without_curl():
    (check,) = [args for keyword, args in _runtime() if keyword == "HEALTHCHECK"]
    assert "/health" in check and '"python"' in check
    assert "curl" not in check and "wget" not in check


def test_every_build_arg_is_documented_in_the_header():
    """infra/image.py's author reads the list at the top of the Dockerfile."""
    header = DOCKERFILE.read_text().split("\nARG ", 1)[0]
    documented = set(re.findall(r"^#   ([A-Z][A-Z0-9_]+) ", header, re.MULTILINE))
    declared = {args.split("=")[0] for keyword, args in _instructions() if keyword == "ARG"}
    assert declared == documented
    for context in ("model", "wheels"):
        assert re.search(rf"^#   {context} ", header, re.MULTILINE), context


def test_named_contexts_replace_stages_of_the_same_name():
    stages = _stages()
    assert stages["wheels"] == [("FROM", "scratch AS wheels")]
    assert stages["model"][0] == ("FROM", "scratch AS model")
    assert ("COPY", "--from=model . /model-src/") in stages["model-convert"]


def _app_imports(module: Path) -> set[str]:
    """app.* modules a module imports, recursively, as file names under app/."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        tree = ast.parse(todo.pop().read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name == "app" or name.startswith("app."):
                    path = ROOT / (name.replace(".", "/") + ".py")
                    path = path if path.is_file() else ROOT / name.replace(".", "/") / "__init__.py"
                    rel = path.relative_to(ROOT).as_posix()
                    if rel not in seen:
                        seen.add(rel)
                        todo.append(path)
    return seen


@pytest.mark.parametrize(
    ("stage", "script"),
    [("model-convert", "docker/convert_model.py"), ("model-onnx", "app/tools/export_onnx.py")],
)
def test_model_stages_copy_every_module_their_script_imports(stage, script):
    """The model stages copy only the modules they run (so app/ edits keep the model layers
    cached); a new app import there must be added to one of its COPY lines (a file, or a folder
    ending in /)."""
    copies = [args for keyword, args in _stages()[stage] if keyword == "COPY" and "app/" in args]
    copied = {source for args in copies for source in args.split()[:-1]}
    needed = _app_imports(ROOT / script) | {"app/__init__.py"}
    if script.startswith("app/"):
        needed.add(script)
    if stage == "model-onnx":
        needed.add("app/model/examples.json")  # the int8 calibration's examples (onnx_int8.py)
    missing = {
        path
        for path in needed
        if not any(path == c or (c.endswith("/") and path.startswith(c)) for c in copied)
    }
    assert not missing, f"{stage} does not copy {sorted(missing)}"


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; a pattern that matches a
    parent directory matches everything under it; `**` spans directories."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        regex = fnmatch.translate(pat).replace(".*.*/", "(.*/)?")
        if any(re.match(regex, p) for p in prefixes):
            ignored = not negate
    return ignored


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("app/serving/server.py", False),
        ("app/serving/static/index.html", False),
        ("app/requirements.txt", False),
        ("docker/convert_model.py", False),
        ("docker/compile_bytecode.py", False),
        ("docker/requirements-modelscope.txt", False),
        ("docker/requirements-onnx.txt", False),
        ("docker/image_probe.py", True),
        ("app/__pycache__/server.cpython-311.pyc", True),
        ("tests/app/serving/test_server.py", True),
        (".venv/bin/python", True),
        (".git/HEAD", True),
        (".image-test/wheels/torch.whl", True),
        (".models/tiny/pytorch_model.bin", True),
        ("docker/Dockerfile", True),
        ("infra/image.py", True),
    ],
)
def test_dockerignore_keeps_the_context_small(path, ignored):
    assert _ignored(path, _dockerignore()) is ignored


def test_every_context_file_the_dockerfile_copies_is_in_the_context():
    patterns = _dockerignore()
    for keyword, args in _instructions():
        if keyword == "COPY" and "--from=" not in args:
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), source
                assert not _ignored(source.rstrip("/"), patterns), source
