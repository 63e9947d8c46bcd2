"""The repository needs nothing outside itself: no file of it (tracked, or new and not ignored)
names a path beside or above the checkout. A user's clone has nothing next to it, so a reference
to a folder beside the checkout works on one machine and fails everywhere else.

What counts as leaving the repository:
- absolute paths into this machine's work folder (`/work/...`);
- `Path(__file__)` climbing (`.parent` chains, `.parents[N]`, `os.path.dirname` nesting) above
  the repository root, given where the file sits;
- a root variable stepped out of (`REPO.parent`, `ROOT / ".."`, `$ROOT/..`, `$(CURDIR)/..`,
  `dirname "$ROOT"`);
- a relative `../` path that ends above the root: in a document (Markdown, HTML) a link resolves
  from the document's folder; in code, scripts and configuration a path resolves from the
  working directory, the repository root (make, the tests, the scripts run from there).
URLs, `../` links that stay inside (docs/ to README.md) and `$(dirname "$0")/..` (a script
finding the root) are fine. This file is not scanned: it names the patterns it looks for.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve().relative_to(REPO).as_posix()

_FIXED = [
    (re.compile(r"(?<![\w.~/-])/work(?:/|\b)"), "an absolute path into /work"),
    (
        re.compile(
            r"\b(?:REPO|ROOT|REPO_ROOT|PROJECT_ROOT)"
            r"(?:\.parent\b|\.parents\[|\s*/\s*[\"']\.\.)"
        ),
        "a step above the repository root variable",
    ),
    (
        re.compile(r"\$[({]?(?:ROOT|REPO|REPO_ROOT|PROJECT_ROOT|CURDIR)[)}]?/\.\.(?![\w.])"),
        "a step above the repository root variable",
    ),
    (
        re.compile(r"\bdirname\s+\"?\$\{?(?:ROOT|REPO|REPO_ROOT|PROJECT_ROOT)\b"),
        "the parent of the repository root",
    ),
]
# Path(__file__)[.resolve()|.absolute()] then .parent chains and/or .parents[N]
_PATH_FILE = re.compile(
    r"Path\(\s*__file__\s*\)(?:\.(?:resolve|absolute)\(\))?"
    r"(?P<climb>(?:\.parent\b(?!s)|\.parents\[\s*\d+\s*\])*)"
)
_DIRNAME_FILE = re.compile(
    r"(?P<dirnames>(?:os\.path\.dirname\(\s*)+)(?:os\.path\.(?:abspath|realpath)\(\s*)?__file__"
)
# A relative chain of ../ that does not continue a name or a longer path (not ".../", "a/../").
_DOTDOT = re.compile(r"(?<![\w./-])(?P<chain>(?:\.\./)+)")
# Files whose relative paths are links, resolved from the file's own folder.
_DOCUMENTS = (".md", ".html", ".rst")


def _levels_up(climb: str) -> int:
    """How many folders above the file's own folder a `.parent`/`.parents[N]` chain ends: 0 for
    `.parent` (the file's folder), N for `.parents[N]`; each further `.parent` adds one."""
    up = -1
    for step in re.findall(r"\.parent\b(?!s)|\.parents\[\s*\d+\s*\]", climb):
        up += 1 if step == ".parent" else int(re.search(r"\d+", step).group()) + 1
    return up


def violations(path: str, text: str) -> list[str]:
    """Each place where `text`, the content of the repository file `path` (relative, with /),
    refers to a path outside the repository, as "path:line: what (the text)"."""
    depth = path.count("/")  # folders between the root and the file
    base = depth if path.endswith(_DOCUMENTS) else 0  # where a relative path starts
    found = []

    def add(start: int, what: str, snippet: str) -> None:
        line = text.count("\n", 0, start) + 1
        found.append(f"{path}:{line}: {what} ({snippet.strip()})")

    for pattern, what in _FIXED:
        for m in pattern.finditer(text):
            add(m.start(), what, m.group())
    for m in _PATH_FILE.finditer(text):
        if m.group("climb") and _levels_up(m.group("climb")) > depth:
            add(m.start(), "Path(__file__) climbs above the repository root", m.group())
    for m in _DIRNAME_FILE.finditer(text):
        if m.group("dirnames").count("dirname") - 1 > depth:
            add(m.start(), "os.path.dirname(__file__) climbs above the repository root", m.group())
    for m in _DOTDOT.finditer(text):
        if m.group("chain").count("../") > base:
            end = text.find("\n", m.start())
            add(m.start(), "a relative path that leaves the repository", text[m.start() : end])
    return found


def _repository_files() -> list[str]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of the repository's files")
    return sorted({p for p in listed.decode().split("\0") if p})


def _text(path: Path) -> str | None:
    """The file's text, or None for a binary file (or a tracked file deleted in the tree)."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def test_no_file_of_the_repository_refers_to_a_path_outside_it():
    found = []
    scanned = 0
    for name in _repository_files():
        text = None if name == THIS else _text(REPO / name)
        if text is not None:
            scanned += 1
            found += violations(name, text)
    assert scanned > 50, f"only {scanned} text files found"
    assert not found, "paths outside the repository:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("bench/mix.py", 'DEFAULT = Path(__file__).resolve().parent.parent.parent / "shared"'),
        ("bench/mix.py", "p = Path(__file__).resolve().parents[2]"),
        ("tests/app/x/test_y.py", "p = Path(__file__).parents[4] / 'data'"),
        ("tests/a/test_b.py", "p = Path(__file__).parents[1].parent.parent"),
        ("bench/x.py", "base = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))"),
        ("tests/conftest.py", 'EXAMPLES = REPO.parent / "data" / "examples.json"'),
        ("bench/x.py", 'p = ROOT / ".." / "data"'),
        ("docker/image-test.sh", 'EXAMPLES="$(dirname "$ROOT")/data/examples.json"'),
        ("docker/image-test.sh", 'cp "$ROOT/../data/x.json" .'),
        ("Makefile", "DATA := $(CURDIR)/../data"),
        ("README.md", "see `../data/examples.json`"),
        ("docs/x.md", "[the examples](../../data/examples.json)"),
        ("app/x.py", 'open("../data/examples.json")'),
        ("infra/kind/up.sh", 'cat "../../data/kind.yaml"'),
        ("docs/runbook.md", "logs are in /work/main/.image-test"),
        ("tests/x.py", 'ROOT = "/work"'),
    ],
)
def test_each_kind_of_reference_outside_is_found(path, text):
    assert violations(path, text), text


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("tests/app/conftest.py", "REPO = Path(__file__).resolve().parents[2]"),
        ("bench/__main__.py", "REPO = Path(__file__).resolve().parent.parent"),
        ("infra/capacity/plan.py", "REPO = Path(__file__).resolve().parent.parent.parent"),
        ("app/serving/server.py", 'STATIC_DIR = Path(__file__).parent / "static"'),
        ("app/model/examples.py", 'EXAMPLES_PATH = Path(__file__).with_name("examples.json")'),
        ("x.py", "HERE = os.path.dirname(os.path.abspath(__file__))"),
        ("docs/architecture.md", "The [README](../README.md) is the user's view."),
        ("bench/README.md", "![chart](../docs/img/benchmark.png)"),
        (".ci/run", 'cd "$(dirname "$0")/.."'),
        ("docker/image-test.sh", 'ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"'),
        ("docker/Dockerfile", "# (a CUDA index, e.g. .../whl/cu128, for a GPU image)"),
        ("Makefile", "export PULUMI_BACKEND_URL ?= file://$(CURDIR)/.pulumi-state"),
        ("Makefile", "PIP_FLAGS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)"),
        ("README.md", "https://example.com/work/../other-things and http://host/a/../b"),
        ("infra/chart/templates/x.yaml", '{{ include "uninlu.labels" . }} path: a/../b'),
        ("app/serving/batching.py", "# the tokenizer is shared across threads; network/work"),
        ("bench/x.py", "out.parent.mkdir(parents=True)  # a path's own parent, not the root's"),
    ],
)
def test_references_inside_the_repository_and_urls_are_fine(path, text):
    assert not violations(path, text), violations(path, text)
