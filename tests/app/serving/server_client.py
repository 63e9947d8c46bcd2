"""What the HTTP tests of the server share: a JSON POST to a test server and the checked error
body of a refusal."""

from __future__ import annotations

import httpx


def post(server, path: str, body, **kwargs) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=60, **kwargs)


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"], body
    return body["error"]
