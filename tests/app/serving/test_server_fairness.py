"""Fair scheduling against a real server on the tiny checkpoint: a heavy request (a long text, many
types; slowed by the test hook to 20 us per model token, in rounds of 8 ms: about one prompt row
a round) does not hold the worker; a client that goes away or runs out of time stops costing
backend calls, and what it had cost is counted as wasted; the cost budget refuses at admission.
Ordering and call counts are asserted, never timings."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from app.model.pipeline import parse_schema
from app.model.tokenizer import load_tokenizer
from app.serving.cost import estimate_cost

HEAVY_TEXT = ("青石镇位于浙江省西南部的山区，距县城约四十公里，镇上有一座百年石桥。" * 200)[:6000]
HEAVY = {"text": HEAVY_TEXT, "schema": {f"类型{i}": None for i in range(10)}}
SHORT = {"text": "今天上午，小林在杭州西湖边买了两杯龙井茶。", "schema": {"人物": None}}
TOO_COMPLEX = {"text": HEAVY_TEXT, "schema": {f"很长很长的类型名称{i}": None for i in range(12)}}
CALLS = "uninlu_batch_size_count"  # one observation per backend call


def cost(model_dir, body: dict) -> int:
    tokenizer = load_tokenizer(model_dir)
    return estimate_cost(tokenizer, body["text"], parse_schema(body["schema"])).cost


@pytest.fixture(scope="module")
def fair(start_server, tiny_model_dir):
    """The heavy request fits the cost budget; TOO_COMPLEX does not."""
    limit = cost(tiny_model_dir, HEAVY) + 100
    assert cost(tiny_model_dir, TOO_COMPLEX) > limit
    server = start_server(
        MAX_TEXT_CHARS="6000",
        MAX_BODY_BYTES="100000",
        TEST_BACKEND_SECONDS_PER_TOKEN="0.00002,0.00002",
        ROUND_BUDGET_MS="8",
        MAX_PROMPT_ROWS="2000",
        MAX_REQUEST_COST=str(limit),
        REQUEST_TIMEOUT_SECONDS="300",
        BATCH_WAIT_MS="0",
    )
    server.cost_limit = limit
    return server


def wait_until(server, condition, timeout: float = 120) -> dict:
    """Poll /metrics until condition(metrics) holds; the metrics of that scrape."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = server.metrics()
        if condition(metrics):
            return metrics
        time.sleep(0.005)
    raise AssertionError("condition not reached")


def score_tokens(metrics: dict) -> float:
    key = ("uninlu_backend_tokens_total", frozenset({"stage": "score", "kind": "real"}.items()))
    return metrics.get(key, 0.0)


def access_line(server, request_id: str) -> dict:
    """The request's access log line (written once the response has gone out)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lines = [r for r in server.log_records() if r.get("request_id") == request_id]
        if lines:
            (line,) = lines
            return line
        time.sleep(0.01)
    raise AssertionError(f"no access log line for {request_id}")


def rejected(server, metrics: dict, reason: str) -> float:
    return server.value(metrics, "uninlu_rejected_total", reason=reason)


def test_a_short_request_completes_while_a_heavy_one_is_in_progress(fair):
    before = score_tokens(fair.metrics())
    heavy: dict = {}

    def send_heavy():
        heavy["response"] = httpx.post(fair.url + "/predict", json=HEAVY, timeout=300)

    thread = threading.Thread(target=send_heavy)
    thread.start()
    wait_until(fair, lambda m: score_tokens(m) > before)  # the heavy one is scoring its rows
    short = httpx.post(fair.url + "/predict", json=SHORT, timeout=300)
    heavy_was_running = thread.is_alive()
    thread.join(300)
    assert short.status_code == 200
    assert heavy_was_running, "the short request waited for the whole heavy one"
    assert heavy["response"].status_code == 200


def _open_heavy(server) -> socket.socket:
    body = json.dumps(HEAVY, ensure_ascii=False).encode()
    sock = socket.create_connection(("127.0.0.1", server.port))
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-Request-Id: heavy-gone\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def test_a_disconnected_heavy_request_stops_costing_backend_calls(fair):
    start = fair.metrics()
    gone_before = rejected(fair, start, "client_disconnected")
    sock = _open_heavy(fair)
    wait_until(fair, lambda m: score_tokens(m) > score_tokens(start))
    sock.close()
    noticed = wait_until(fair, lambda m: rejected(fair, m, "client_disconnected") > gone_before)
    settled = wait_until(fair, lambda m: fair.value(m, "uninlu_queue_depth") == 0)
    calls = fair.value(settled, CALLS)
    # At most the backend call in progress when the cancellation was flagged; then nothing.
    assert calls - fair.value(noticed, CALLS) <= 1
    assert calls - fair.value(start, CALLS) < 100  # uncut, it needs 1 + 170 (a row per call)
    short = httpx.post(fair.url + "/predict", json=SHORT, timeout=300)
    assert short.status_code == 200
    assert fair.value(fair.metrics(), CALLS) - calls == 2  # the short one's encode and score
    line = access_line(fair, "heavy-gone")
    assert line["status"] == 499 and line["cancelled"] == "client_disconnected"
    assert 0 < line["cost_tokens"] < line["cost_estimate"]
    wasted = ("uninlu_wasted_tokens_total", frozenset({"reason": "client_disconnected"}.items()))
    # Counted when the worker drops it: what the answer had logged, and the call then running.
    assert line["cost_tokens"] <= fair.metrics()[wasted] - start[wasted] < line["cost_estimate"]


def test_the_client_deadline_gives_a_504_and_is_counted(fair):
    before = rejected(fair, fair.metrics(), "deadline_exceeded")
    answer = httpx.post(
        fair.url + "/predict",
        json=HEAVY,
        headers={"X-Request-Timeout": "0.01", "X-Request-Id": "heavy-late"},
        timeout=300,
    )
    assert answer.status_code == 504
    error = answer.json()["error"]
    assert error["code"] == "deadline_exceeded"
    assert "time limit of 0.01 s" in error["message"]
    assert "REQUEST_TIMEOUT_SECONDS=300" in error["message"]
    settled = wait_until(fair, lambda m: fair.value(m, "uninlu_queue_depth") == 0)
    assert rejected(fair, settled, "deadline_exceeded") == before + 1
    assert httpx.post(fair.url + "/predict", json=SHORT, timeout=300).status_code == 200
    line = access_line(fair, "heavy-late")
    assert line["status"] == 504 and line["cancelled"] == "deadline_exceeded"


@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan", "inf", ""])
def test_a_bad_timeout_header_is_422(fair, value):
    answer = httpx.post(fair.url + "/predict", json=SHORT, headers={"X-Request-Timeout": value})
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "invalid_request"
    assert (
        "X-Request-Timeout must be a positive number of seconds"
        in answer.json()["error"]["message"]
    )


def test_a_request_certainly_over_the_cost_budget_is_refused_before_any_compute(
    fair, tiny_model_dir
):
    start = fair.metrics()
    answer = httpx.post(fair.url + "/predict", json=TOO_COMPLEX, timeout=300)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "too_complex"
    estimate = cost(tiny_model_dir, TOO_COMPLEX)
    assert f"estimated at {estimate} model tokens" in error["message"]
    assert f"MAX_REQUEST_COST={fair.cost_limit}" in error["message"]
    after = fair.metrics()
    assert rejected(fair, after, "too_complex") == rejected(fair, start, "too_complex") + 1
    assert fair.value(after, CALLS) == fair.value(start, CALLS)  # nothing reached the backend
    batch = {"items": [SHORT, TOO_COMPLEX]}
    answer = httpx.post(fair.url + "/predict/batch", json=batch, timeout=300)
    assert answer.status_code == 422 and answer.json()["error"]["message"].startswith("items[1]: ")


def test_the_actual_cost_is_logged_and_observed(fair):
    before = fair.value(fair.metrics(), "uninlu_request_cost_tokens_count")
    answer = httpx.post(fair.url + "/predict", json=SHORT, headers={"X-Request-Id": "short-cost"})
    assert answer.status_code == 200
    line = access_line(fair, "short-cost")
    assert line["cost_rows"] == 1 and line["cost_tokens"] == line["cost_estimate"] > 0
    assert "cancelled" not in line
    after = fair.value(fair.metrics(), "uninlu_request_cost_tokens_count")
    assert after == before + 1


def test_the_server_timeout_caps_the_client_header(start_server):
    capped = start_server(
        REQUEST_TIMEOUT_SECONDS="0.05",
        MAX_TEXT_CHARS="6000",
        MAX_BODY_BYTES="100000",
        MAX_REQUEST_COST="1000000",
        MAX_PROMPT_ROWS="2000",
    )
    answer = httpx.post(
        capped.url + "/predict", json=HEAVY, headers={"X-Request-Timeout": "100"}, timeout=300
    )
    assert answer.status_code == 504
    assert "time limit of 0.05 s" in answer.json()["error"]["message"]
