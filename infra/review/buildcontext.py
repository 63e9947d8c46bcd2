"""What pulumi-docker-build diffs an image's build context by (provider/internal/context.go,
hashBuildContext): the Dockerfile, then every file of the context that .dockerignore leaves in,
then each local named context. A change under app/ changes it; a change under tests/
(dockerignored) does not. The lifecycle tests model the provider with it, and `make diff` tells
from it whether a change needs a new image.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Mapping
from pathlib import Path


def dockerignore(root: Path) -> list[str]:
    path = root / ".dockerignore"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a pattern that matches a
    directory matches everything under it; `**/` matches any depth (a close model of
    moby/patternmatcher, enough for this repo's .dockerignore)."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = (raw[1:] if negate else raw).strip("/")
        variants = {pattern, pattern.replace("**/", "")}
        if any(fnmatch.fnmatchcase(c, v) for c in candidates for v in variants):
            result = not negate
    return result


def context_hash(root: Path, location: str, dockerfile: str, named: Mapping[str, str]) -> str:
    """sha256 over the Dockerfile and the files the build sends (paths relative to `root`)."""
    digest = hashlib.sha256()
    digest.update((root / dockerfile).read_bytes())
    patterns = dockerignore(root / location)
    for base in [root / location, *(root / named[key] for key in sorted(named))]:
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            relative = path.relative_to(base).as_posix()
            if base == root / location and ignored(relative, patterns):
                continue
            digest.update(relative.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
