"""What a real `python -m app` on loopback tells its operators: request ids, the access log line
(without the text), the settings logged at start-up, the metrics after a known sequence, and the
texts counter the HPA scales on."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
from server_client import post

from app.serving.metrics import PREDICT_ROUTES, PREDICT_TEXTS_TOTAL, REQUESTS_TOTAL


def test_request_id_is_accepted_or_made(server):
    given = httpx.get(server.url + "/health", headers={"X-Request-ID": "req-123.a"})
    assert given.headers["x-request-id"] == "req-123.a"
    made = httpx.get(server.url + "/health")
    assert len(made.headers["x-request-id"]) == 32
    hostile = httpx.get(server.url + "/health", headers={"X-Request-ID": "a b\tc" * 40})
    assert hostile.headers["x-request-id"] != "a b\tc" * 40


def test_access_log_is_one_json_line_without_the_text(server):
    rid = uuid.uuid4().hex
    secret = "这段文字不应该出现在日志里" + rid[:6]
    response = post(
        server,
        "/predict",
        {"text": secret, "schema": {"人物": {"地点": None}, "时间": None}},
        headers={"X-Request-ID": rid},
    )
    assert response.status_code == 200
    for _ in range(100):  # the line is written just after the response went out
        lines = [r for r in server.log_records() if r.get("request_id") == rid]
        access = [r for r in lines if r.get("logger") == "uninlu.access"]
        if access:
            break
        time.sleep(0.05)
    assert len(access) == 1, lines
    line = access[0]
    assert line["route"] == "/predict" and line["status"] == 200 and line["method"] == "POST"
    assert line["text_chars"] == len(secret) and line["schema_nodes"] == 3
    assert line["duration_ms"] > 0 and line["level"] == "INFO" and "time" in line
    assert secret not in server.logs()


def test_settings_logged_at_start_up(server):
    records = server.log_records()
    settings = [r for r in records if r.get("message") == "settings"]
    assert settings and settings[0]["settings"]["MAX_TEXT_CHARS"] == 400
    assert any(r.get("logger", "").startswith("uvicorn") for r in records)


def test_metrics_after_a_known_sequence(server):
    before = server.metrics()
    ok = {"text": "今天上午小林在杭州", "schema": {"人物": None}}
    assert post(server, "/predict", ok).status_code == 200
    assert post(server, "/predict", ok).status_code == 200
    assert post(server, "/predict/batch", {"items": [ok, ok, ok]}).status_code == 200
    assert post(server, "/predict", {"text": "x", "schema": []}).status_code == 422
    assert post(server, "/predict", {"text": "长" * 401, "schema": {"a": None}}).status_code == 413
    assert httpx.get(server.url + "/health").status_code == 200
    assert httpx.get(server.url + "/nope/123").status_code == 404
    after = server.metrics()
    v = server.value

    def delta(name, **labels):
        return v(after, name, **labels) - v(before, name, **labels)

    assert delta(REQUESTS_TOTAL, route="/predict", method="POST", status="200") == 2
    assert delta(REQUESTS_TOTAL, route="/predict/batch", method="POST", status="200") == 1
    assert delta(REQUESTS_TOTAL, route="/predict", method="POST", status="422") == 1
    assert delta(REQUESTS_TOTAL, route="/predict", method="POST", status="413") == 1
    assert delta(REQUESTS_TOTAL, route="/health", method="GET", status="200") == 1
    assert delta(REQUESTS_TOTAL, route="unmatched", method="GET", status="404") == 1
    assert delta(REQUESTS_TOTAL, route="/metrics", method="GET", status="200") == 1  # `before`
    assert delta("uninlu_request_duration_seconds_count", route="/predict") == 4
    assert delta("uninlu_rejected_total", reason="invalid_request") == 1
    assert delta("uninlu_rejected_total", reason="text_too_long") == 1
    # 2 + 3 predictions went through the batcher.
    assert delta("uninlu_queue_wait_seconds_count") == 5
    assert delta("uninlu_inference_seconds_count", stage="tokenize") == 5
    assert delta("uninlu_inference_seconds_count", stage="encode") >= 1
    assert delta("uninlu_inference_seconds_count", stage="score") >= 1
    assert v(after, "uninlu_inflight_requests") == 1  # the scrape itself
    assert v(after, "uninlu_queue_depth") == 0
    assert v(after, "uninlu_model_ready") == 1
    assert v(after, "uninlu_model_load_seconds") > 0
    info = [labels for (name, labels) in after if name == "uninlu_build_info"]
    assert len(info) == 1 and dict(info[0])["backend"] == "torch-fp32"
    # Every series of the contract is there, and requests_total has exactly its three labels.
    names = {name for name, _ in after}
    for name in (
        "uninlu_requests_total",
        "uninlu_request_duration_seconds_bucket",
        "uninlu_inflight_requests",
        "uninlu_queue_depth",
        "uninlu_queue_wait_seconds_bucket",
        "uninlu_inference_seconds_bucket",
        "uninlu_batch_size_bucket",
        "uninlu_rejected_total",
        "uninlu_model_load_seconds",
        "uninlu_model_ready",
        "uninlu_build_info",
    ):
        assert name in names, name
    routes = set()
    for name, labels in after:
        if name == REQUESTS_TOTAL:
            assert {k for k, _ in labels} == {"route", "method", "status"}
            routes.add(dict(labels)["route"])
    assert "/nope/123" not in routes and "unmatched" in routes


def test_texts_counter_counts_every_text_offered_whatever_the_answer(start_server):
    """The HPA's metric counts work: a batch of n is n texts, and refused calls count too (load
    answered 429 must still ask for pods); only a body that did not parse counts nothing."""
    # A 4-item batch fills the queue, and the idle worker holds it for BATCH_WAIT_MS waiting for
    # company: the batch sent meanwhile is refused with 429.
    small = start_server(MAX_QUEUE="4", MAX_BATCH_ITEMS="4", BATCH_WAIT_MS="1500")
    before = small.metrics()
    for route in PREDICT_ROUTES:  # there before any traffic, so every pod has a rate
        assert (PREDICT_TEXTS_TOTAL, frozenset({("route", route), ("status", "200")})) in before
    ok = {"text": "今天上午小林在杭州", "schema": {"人物": None}}
    calls = [
        ("/predict", ok, 200),
        ("/predict", ok, 200),
        ("/predict/batch", {"items": [ok] * 3}, 200),
        ("/predict/batch", {"items": [ok] * 5}, 413),  # more than MAX_BATCH_ITEMS
        ("/predict", {"text": "长" * 401, "schema": {"a": None}}, 413),
        ("/predict", {"schema": {"a": None}}, 422),  # no text: the body never parsed
        ("/predict/batch", {"items": "none"}, 422),
    ]
    for path, body, status in calls:
        assert post(small, path, body).status_code == status, (path, status)
    with ThreadPoolExecutor(1) as pool:
        full = pool.submit(post, small, "/predict/batch", {"items": [ok] * 4})
        while small.value(small.metrics(), "uninlu_queue_depth") < 4:
            assert not full.done(), full.result().text
        refused = post(small, "/predict/batch", {"items": [ok] * 2})
        assert full.result().status_code == 200
    assert refused.status_code == 429, refused.text
    assert httpx.get(small.url + "/health").status_code == 200
    after = small.metrics()

    def delta(name, **labels):
        return small.value(after, name, **labels) - small.value(before, name, **labels)

    assert delta(PREDICT_TEXTS_TOTAL, route="/predict", status="200") == 2
    assert delta(PREDICT_TEXTS_TOTAL, route="/predict/batch", status="200") == 3 + 4
    assert delta(PREDICT_TEXTS_TOTAL, route="/predict/batch", status="429") == 2
    assert delta(PREDICT_TEXTS_TOTAL, route="/predict/batch", status="413") == 5
    assert delta(PREDICT_TEXTS_TOTAL, route="/predict", status="413") == 1
    texts = {
        labels: value for (name, labels), value in after.items() if name == PREDICT_TEXTS_TOTAL
    }
    offered = sum(
        value - before.get((PREDICT_TEXTS_TOTAL, labels), 0) for labels, value in texts.items()
    )
    assert offered == 2 + 7 + 2 + 5 + 1  # nothing for the 422s or /health
    # The fixture's one /predict while the model loaded was answered 503, and counted.
    assert small.value(before, PREDICT_TEXTS_TOTAL, route="/predict", status="503") == 1
    assert {dict(labels)["route"] for labels in texts} == set(PREDICT_ROUTES)
    assert all({key for key, _ in labels} == {"route", "status"} for labels in texts)
    # The HTTP-call counter stays as it was: one batch call is one request.
    assert delta(REQUESTS_TOTAL, route="/predict/batch", method="POST", status="200") == 2
    assert delta(REQUESTS_TOTAL, route="/predict/batch", method="POST", status="429") == 1
