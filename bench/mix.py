"""The request mix the benchmark replays: the examples of shared/examples.json as /predict bodies.

The single-level examples (every schema value null) have a fixed cost per request on any checkpoint:
one text encode and one prompt-scoring step. Multi-level examples depend on which spans a (random)
checkpoint happens to extract, so their cost is not comparable between runs; they are still used for
the output-agreement check.
"""

from __future__ import annotations

import json
from pathlib import Path

DEFAULT_EXAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "examples.json"


def find_examples(explicit: str | None = None) -> Path:
    """The examples file: an explicit path, else ../shared/examples.json (the project's shared
    folder, beside the checkout; the tests read it from here too)."""
    candidates = [Path(explicit)] if explicit else []
    candidates += [DEFAULT_EXAMPLES]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        "examples.json not found (looked in: " + ", ".join(str(p) for p in candidates) + ")"
    )


def load_examples(path: Path) -> list[dict]:
    """All examples as /predict bodies, with their task name."""
    data = json.loads(path.read_text(encoding="utf-8"))
    examples = data["examples"] if isinstance(data, dict) else data
    return [{"task": e["task"], "text": e["text"], "schema": e["schema"]} for e in examples]


def is_single_level(schema: dict) -> bool:
    return isinstance(schema, dict) and all(v is None for v in schema.values())


def single_level_mix(examples: list[dict]) -> list[dict]:
    """The /predict bodies of the single-level examples (the load mix)."""
    mix = [
        {"text": e["text"], "schema": e["schema"]} for e in examples if is_single_level(e["schema"])
    ]
    if not mix:
        raise ValueError("no single-level example (schema with only null values) in the examples")
    return mix
