"""docker/image-test.sh's probe of a running container: what Kubernetes and a client would see.

Waits for /ready (bounded, and only while the container runs), then checks /health, one real
prediction, which must equal what `python -m app predict` answered on the host for the same
checkpoint, and one bad request (422).
Environment: PORT (published on 127.0.0.1), CONTAINER (podman name), READY_TIMEOUT (seconds),
TEXT, SCHEMA (JSON) and EXPECTED (the host's JSON answer). Standard library only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request


def call(base: str, path: str, body: object = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        base + path, data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def container_state(name: str) -> str:
    out = subprocess.run(
        ["podman", "inspect", "--format", "{{.State.Status}}", name],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "gone"


def wait_ready(base: str, container: str, timeout: float) -> float:
    start = time.monotonic()
    while True:
        try:
            if call(base, "/ready")[0] == 200:
                return time.monotonic() - start
        except OSError:
            pass  # not listening yet
        state = container_state(container)
        if state != "running":
            raise SystemExit(f"container is {state} before /ready")
        if time.monotonic() - start > timeout:
            raise SystemExit(f"/ready not 200 after {timeout:.0f} s")
        time.sleep(1)


def main() -> int:
    base = f"http://127.0.0.1:{os.environ['PORT']}"
    text, schema = os.environ["TEXT"], json.loads(os.environ["SCHEMA"])
    expected = json.loads(os.environ["EXPECTED"])["output"]
    took = wait_ready(base, os.environ["CONTAINER"], float(os.environ["READY_TIMEOUT"]))
    print(f"[image-test] /ready after {took:.1f} s")

    status, body = call(base, "/health")
    assert status == 200 and body == {"status": "ok"}, f"/health: {status} {body}"

    status, body = call(base, "/predict", {"text": text, "schema": schema})
    assert status == 200, f"/predict: HTTP {status}: {body}"
    output = body.get("output") if isinstance(body, dict) else None
    assert isinstance(output, list), f"/predict: no 'output' list in {body}"
    assert output == expected, f"/predict: {output}, the host's pipeline said {expected}"
    shown = json.dumps(output, ensure_ascii=False)[:160]
    print(f"[image-test] /predict: 200, {len(output)} item(s), as on the host: {shown}")

    status, body = call(base, "/predict", {"text": text, "schema": "{not json"})
    assert status == 422, f"/predict with a broken schema: expected 422, got {status}: {body}"
    return 0


if __name__ == "__main__":
    sys.exit(main())
