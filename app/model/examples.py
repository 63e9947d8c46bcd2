"""The project's example requests: one per task type, in examples.json beside this module.

Why one file inside the package: the web page (GET /examples), the benchmark's request mix
(bench/mix.py), the default int8 calibration set (app/tools/onnx_int8.py) and the tests all read
these same requests, and a clone or an image that carries app/model/ has them; nothing outside
the repository is needed. Format: {"examples": [{"task", "label", "text", "schema"}, ...]}
("label": the web page's name for the task; a user's own examples file needs only "text" and
"schema", and "task" where it is used as a name).
"""

from __future__ import annotations

import json
from pathlib import Path

EXAMPLES_PATH = Path(__file__).with_name("examples.json")


def load_examples(path: Path | str = EXAMPLES_PATH) -> list[dict]:
    """The examples of an examples file (the project's by default), in file order."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return list(data["examples"] if isinstance(data, dict) else data)
