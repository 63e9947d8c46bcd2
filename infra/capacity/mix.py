"""The request mix the capacity is measured with: the single-level examples (every schema value
null) of the project's examples file, as /predict bodies. Their cost per request is fixed on any
checkpoint (one text encode, one prompt-scoring step), so a random checkpoint measures what the
real model costs.

The examples file is read by path, as data: deployment code never imports app.model.
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
EXAMPLES_FILE = REPO / "app" / "model" / "examples.json"


def examples_file(explicit: str | Path | None = None) -> Path:
    """The examples file: an explicit path, else app/model/examples.json."""
    path = Path(explicit) if explicit else EXAMPLES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"examples file not found: {path}")
    return path


def is_single_level(schema: dict) -> bool:
    return isinstance(schema, dict) and all(v is None for v in schema.values())


def single_level_bodies(path: Path) -> list[dict]:
    """The /predict bodies of the file's single-level examples (the load mix)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    examples = data["examples"] if isinstance(data, dict) else data
    bodies = [
        {"text": e["text"], "schema": e["schema"]} for e in examples if is_single_level(e["schema"])
    ]
    if not bodies:
        raise ValueError(f"no single-level example (schema with only null values) in {path}")
    return bodies
