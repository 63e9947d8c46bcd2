"""The capacity record, infra/capacity/capacity.json: one pod's measured capacity per runtime and
CPU limit, written by `make plan` and read by the planner and by infra/config.py's stack check
(which warns when a stack's texts target exceeds it). Kept beside the code that reads it, so
deployment code reads nothing from bench/; no dependency beyond the standard library, so the Pulumi
program pays nothing for it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

CAPACITY_FILE = Path(__file__).resolve().parent / "capacity.json"
FORMAT = 1


def recorded_capacity(
    runtime: str, cpus: float, path: Path = CAPACITY_FILE
) -> dict[str, Any] | None:
    """The newest record of `path` for this runtime and CPU count, or None (no file, none kept)."""
    if not path.is_file():
        return None
    records = json.loads(path.read_text(encoding="utf-8")).get("records", [])
    matching = [r for r in records if r["runtime"] == runtime and abs(r["cpus"] - cpus) < 1e-6]
    return max(matching, key=lambda r: r["date"]) if matching else None


def load(runtime: str, cpus: float, path: Path = CAPACITY_FILE) -> dict | None:
    return recorded_capacity(runtime, cpus, path)


def save(record: dict, path: Path = CAPACITY_FILE) -> None:
    """Keep one record per runtime and CPU count (the newest), sorted, in a versioned file."""
    document = {"format": FORMAT, "records": []}
    if path.is_file():
        document = json.loads(path.read_text(encoding="utf-8"))
    key = (record["runtime"], record["cpus"])
    kept = [r for r in document["records"] if (r["runtime"], r["cpus"]) != key]
    document["records"] = sorted([*kept, record], key=lambda r: (r["runtime"], r["cpus"]))
    document["format"] = FORMAT
    document["about"] = (
        "One pod's measured capacity per image.runtime and CPU limit (make plan). "
        "infra/config.py warns when a stack's targetTextsPerSecondPerPod exceeds it."
    )
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
