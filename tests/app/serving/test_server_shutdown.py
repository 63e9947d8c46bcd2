"""SIGTERM on a real `python -m app` while a long request runs and another waits behind it: each
gets its answer before the process exits, a 200 or a JSON 503 `shutting_down` with Retry-After,
never a 500 or a dropped connection (the shutdown budget is 2 s, the long request needs far more).
Statuses and orders are asserted, never timings. Before the drain answered its requests (the
server of commit deb0a7e), both ended as a plain-text `500 Internal Server Error` when uvicorn's
graceful timeout cancelled them."""

from __future__ import annotations

import threading
import time

import httpx

# About 10,000 text tokens (29 windows) x 40 types: 1,160 prompt rows, several seconds of work
# even for the tiny checkpoint, so it cannot finish within the 2 s budget.
LONG = {
    "text": ("青石镇位于浙江省西南部的山区，距县城约四十公里，镇上有一座百年石桥。" * 300)[:10000],
    "schema": {f"类型{i}": None for i in range(40)},
}
SHORT = {"text": "今天上午，小林在杭州西湖边买了两杯龙井茶。", "schema": {"人物": None}}
SCORE_TOKENS = (
    "uninlu_backend_tokens_total",
    frozenset({"stage": "score", "kind": "real"}.items()),
)


def _send(url: str, body: dict, request_id: str, into: dict) -> None:
    try:
        into[request_id] = httpx.post(
            url + "/predict", json=body, headers={"X-Request-Id": request_id}, timeout=120
        )
    except httpx.HTTPError as err:  # a dropped connection: recorded, and the test fails on it
        into[request_id] = err


def _wait_for(server, condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition(server.metrics()):
            return
        time.sleep(0.01)
    raise AssertionError(f"condition not reached:\n{server.logs()[-3000:]}")


def test_sigterm_answers_the_running_and_the_queued_request_never_a_500(start_server):
    server = start_server(
        GRACEFUL_SHUTDOWN_SECONDS="2",
        MAX_BATCH_REQUESTS="1",  # the short request waits in the queue behind the long one
        MAX_TEXT_CHARS="10000",
        MAX_BODY_BYTES="200000",
        MAX_SCHEMA_NODES="64",
        MAX_PROMPT_ROWS="100000",
        MAX_REQUEST_COST="100000000",
        REQUEST_TIMEOUT_SECONDS="600",
        # 0.1 ms per model token, as the drain's estimate sees it (and at least that long): the
        # long request is some 50 s of work, the short one a few ms. A server without the hook
        # ignores it, and the long request still takes seconds.
        TEST_BACKEND_SECONDS_PER_TOKEN="0.0001,0.0001",
    )
    answers: dict = {}
    started = server.metrics().get(SCORE_TOKENS, 0.0)
    long = threading.Thread(target=_send, args=(server.url, LONG, "long", answers))
    long.start()
    _wait_for(server, lambda m: m.get(SCORE_TOKENS, 0.0) > started)  # the long one is scoring
    short = threading.Thread(target=_send, args=(server.url, SHORT, "short", answers))
    short.start()
    _wait_for(server, lambda m: server.value(m, "uninlu_queue_depth") == 2)
    assert long.is_alive(), "the long request finished before the signal: make it longer"

    server.terminate()
    long.join(120)
    short.join(120)
    code = server.proc.wait(60)

    assert code in (0, -15), server.logs()[-3000:]
    got = {
        name: (a.status_code, a.text[:80]) if isinstance(a, httpx.Response) else repr(a)
        for name, a in answers.items()
    }
    for name in ("long", "short"):
        answer = answers[name]
        assert isinstance(answer, httpx.Response), got
        assert answer.status_code in (200, 503), got
        if answer.status_code == 503:
            assert answer.json()["error"]["code"] == "shutting_down"
            assert int(answer.headers["retry-after"]) >= 1
    statuses = {name: a.status_code for name, a in answers.items()}
    # The long request cannot finish within the budget: it is answered at once, and the short
    # one, which can, gets its result.
    assert statuses == {"long": 503, "short": 200}, statuses
    lines = {
        r.get("request_id"): r for r in server.log_records() if r.get("logger") == "uninlu.access"
    }
    assert lines["long"]["status"] == 503 and lines["long"]["cancelled"] == "shutting_down"
    assert lines["short"]["status"] == 200
