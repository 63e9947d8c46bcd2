"""The request mix the benchmark replays: the project's examples (app/model/examples.json), or a
user's own examples file, as /predict bodies.

The single-level examples (every schema value null) have a fixed cost per request on any checkpoint:
one text encode and one prompt-scoring step. Multi-level examples depend on which spans a (random)
checkpoint happens to extract, so their cost is not comparable between runs; they are still used for
the output-agreement check.
"""

from __future__ import annotations

from pathlib import Path

from app.model import examples as project_examples

DEFAULT_EXAMPLES = project_examples.EXAMPLES_PATH


def find_examples(explicit: str | None = None) -> Path:
    """The examples file: an explicit path (a user's own examples), else the project's
    (app/model/examples.json)."""
    path = Path(explicit) if explicit else DEFAULT_EXAMPLES
    if not path.is_file():
        raise FileNotFoundError(f"examples.json not found: {path}")
    return path


def load_examples(path: Path) -> list[dict]:
    """All examples as /predict bodies, with their task name."""
    return [
        {"task": e["task"], "text": e["text"], "schema": e["schema"]}
        for e in project_examples.load_examples(path)
    ]


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
