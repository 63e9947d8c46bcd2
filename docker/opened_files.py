"""List the files a serving process opens: start the server in-process with torch unimportable
(as the lean image runs), answer every kind of request (/predict, /predict/batch, /metrics,
/, /docs and its assets, /openapi.json, /health), then print every imported module's file,
every mapped shared library and every open file, one per line; with --with-reads also every
file Python opened and closed again (the "open" audit event: the tokenizer's files, the pages'
static assets, but also metadata scans that tolerate a missing file). Files that native code
opens and closes (ONNX Runtime reading a graph) are not seen.

The evidence for docker/prune_venv.py (tests/docker/test_prune_venv.py). Usage:
  MODEL_PATH=DIR BACKEND=onnx-int8 PORT=free-port python docker/opened_files.py [--with-reads]
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
import urllib.request

sys.modules["torch"] = None  # the lean image has no torch
_OPENED: set[str] = set()


def _audit(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], str):
        _OPENED.add(args[0])


sys.addaudithook(_audit)


def _get(url: str, body: dict | None = None) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"} if body is not None else {}
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.read()


def exercise(base: str) -> None:
    """Every route a pod answers, with the assets the pages load."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            _get(base + "/ready")
            break
        except OSError:
            time.sleep(0.2)
    schema = {"人物": None, "地理位置": {"位于": None}}
    _get(base + "/predict", {"text": "李雷上周去了苏州博物馆。", "schema": schema})
    _get(base + "/predict/batch", {"items": [{"text": "好", "schema": {"正向,负向|": None}}]})
    for path in ("/metrics", "/openapi.json", "/health"):
        _get(base + path)
    for page in ("/", "/docs"):
        for asset in re.findall(r'(?:src|href)="(/[^"]+)"', _get(base + page).decode()):
            _get(base + asset)


def opened_files(with_reads: bool = False) -> set[str]:
    files = {
        os.path.realpath(m.__file__)
        for m in list(sys.modules.values())
        if getattr(m, "__file__", None)
    }
    if with_reads:
        files |= {os.path.realpath(f) for f in list(_OPENED) if os.path.isfile(f)}
    with open("/proc/self/maps") as maps:
        files |= {os.path.realpath(f[5]) for f in map(str.split, maps) if len(f) > 5}
    for fd in os.listdir("/proc/self/fd"):
        try:
            files.add(os.path.realpath(os.readlink(f"/proc/self/fd/{fd}")))
        except OSError:
            continue
    return {f for f in files if f.startswith("/")}


def main() -> int:
    import uvicorn

    from app.serving.server import create_app
    from app.serving.settings import Settings

    settings = Settings.from_env({**os.environ, "HOST": "127.0.0.1", "LOG_LEVEL": "WARNING"})
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.port, log_config=None)
    )
    threading.Thread(target=server.run, daemon=True).start()
    exercise(f"http://127.0.0.1:{settings.port}")
    print("\n".join(sorted(opened_files(with_reads="--with-reads" in sys.argv[1:]))))
    server.should_exit = True
    return 0


if __name__ == "__main__":
    sys.exit(main())
