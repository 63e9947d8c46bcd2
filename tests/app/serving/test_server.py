"""The HTTP API against a real `python -m app` on loopback with the tiny checkpoint: endpoints,
every error code, metrics after a known sequence, logs, and batching that changes nothing."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from app.model.pipeline import predict as pipeline_predict
from app.serving.metrics import PREDICT_ROUTES, PREDICT_TEXTS_TOTAL, REQUESTS_TOTAL


def post(server, path: str, body, **kwargs) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=60, **kwargs)


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"], body
    return body["error"]


# ------------------------------------------------------------------------------ endpoints


def test_liveness_readiness_and_pages(server):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    assert httpx.get(server.url + "/ready").json() == {"status": "ready"}
    # The port opened before the model was loaded: /ready said 503 meanwhile, /health 200.
    assert server.statuses_before_ready, "the server was never seen loading"
    assert all(health == 200 and ready == 503 for health, ready in server.statuses_before_ready)
    assert server.predict_before_ready == (503, "not_ready")
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/static/app.js" in page.text
    assert httpx.get(server.url + "/static/app.js").status_code == 200
    docs = httpx.get(server.url + "/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    # The docs page works offline: every script and stylesheet it loads is served by us.
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', docs.text)
    assert assets and all(a.startswith("/") for a in assets), assets
    assert all(httpx.get(server.url + a).status_code == 200 for a in assets)
    spec = httpx.get(server.url + "/openapi.json").json()
    for path in PREDICT_ROUTES:
        assert "requestBody" in spec["paths"][path]["post"]
        assert {"200", "413", "422", "429", "503"} <= set(spec["paths"][path]["post"]["responses"])
    assert {"PredictRequest", "PredictResponse", "BatchRequest", "ErrorResponse"} <= set(
        spec["components"]["schemas"]
    )


def test_examples_route_serves_the_project_examples(server, examples):
    """GET /examples: app/model/examples.json as it is (the web page's picker reads it)."""
    answer = httpx.get(server.url + "/examples")
    assert answer.status_code == 200
    assert answer.json() == {"examples": examples}
    spec = httpx.get(server.url + "/openapi.json").json()
    ok = spec["paths"]["/examples"]["get"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": "#/components/schemas/ExamplesResponse"}


def test_predict_equals_the_pipeline_for_every_example(server, examples, tiny_model_dir):
    from app.runtime.torch_backend import load_backend

    backend, tokenizer = load_backend(tiny_model_dir, device="cpu", threads=1)
    some_spans = 0
    for ex in examples:
        got = post(server, "/predict", {"text": ex["text"], "schema": ex["schema"]})
        assert got.status_code == 200, got.text
        want = pipeline_predict(backend, tokenizer, ex["text"], ex["schema"])
        assert got.json() == {"output": want}, ex["task"]
        some_spans += bool(want)
    assert some_spans >= 3  # the comparison is not between empty lists only


def _nested_example_with_output(server, examples) -> tuple[dict, dict]:
    for ex in examples:
        if any(v is not None for v in ex["schema"].values()):
            out = post(server, "/predict", {"text": ex["text"], "schema": ex["schema"]}).json()
            if out["output"]:
                return ex, out
    raise AssertionError("no nested example gives output on the tiny checkpoint")


def test_schema_as_json_string_and_output_all_prefix(server, examples):
    ex, as_object = _nested_example_with_output(server, examples)
    as_string = post(
        server,
        "/predict",
        {"text": ex["text"], "schema": json.dumps(ex["schema"], ensure_ascii=False)},
    ).json()
    assert as_object == as_string and as_object["output"]
    with_inner = post(
        server, "/predict", {"text": ex["text"], "schema": ex["schema"], "output_all_prefix": True}
    ).json()["output"]
    assert len(with_inner) > len(as_object["output"])
    assert any(len(chain) == 1 for chain in with_inner)  # the inner chains
    for chain in as_object["output"]:
        assert chain in with_inner
        for item in chain:
            start, end = item["offset"]
            assert ex["text"][start:end] == item["span"]


def test_batch_equals_single_requests(server, examples):
    items = [{"text": e["text"], "schema": e["schema"]} for e in examples[:5]]
    batch = post(server, "/predict/batch", {"items": items})
    assert batch.status_code == 200, batch.text
    singles = [post(server, "/predict", item).json() for item in items]
    assert batch.json() == {"results": singles}


def test_empty_text_is_answered(server):
    assert post(server, "/predict", {"text": "", "schema": {"人物": None}}).json() == {"output": []}


# ------------------------------------------------------------------------------ errors

TOO_DEEP = {"a": {"b": {"c": {"d": None}}}}  # 4 levels, the test server allows 3


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (["人物"], "must be a JSON object, got array"),
        (5, "got number"),
        (None, "got null"),
        ("人物", "not valid JSON"),
        ('"人物"', "must be a JSON object"),
        ({}, "empty"),
        ({"": None}, "non-empty strings"),
        ({"  ": None}, "non-empty strings"),
        ({"人物": 1}, "must be null or an object"),
        ({"人物": ["地点"]}, "must be null or an object"),
        ({"人物": "地点"}, "must be null or an object"),
        (TOO_DEEP, "deeper than 3"),
        ({f"t{i}": None for i in range(13)}, "more than 12"),
    ],
)
def test_bad_schema_is_422_naming_the_problem(server, schema, expected):
    response = post(server, "/predict", {"text": "今天", "schema": schema})
    assert response.status_code == 422, response.text
    err = error_of(response)
    assert err["code"] == "invalid_schema" and expected in err["message"], err


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"schema": {"a": None}}, "text is required"),
        ({"text": "x"}, "schema is required"),
        ({"text": 5, "schema": {"a": None}}, "text"),
        ({"text": "x", "schema": {"a": None}, "output_all_prefix": "maybe"}, "output_all_prefix"),
        ({"text": "x", "schema": {"a": None}, "schemas": {}}, "unknown field schemas"),
        ([1, 2], "valid dictionary"),
    ],
)
def test_invalid_body_is_422(server, body, expected):
    response = post(server, "/predict", body)
    assert response.status_code == 422, response.text
    err = error_of(response)
    assert err["code"] == "invalid_request" and expected in err["message"], err


@pytest.mark.parametrize(
    "raw",
    [b'{"text": "x", "schema": ', b"\xff\xfe", b"[" * 5000 + b"]" * 5000, b"not json"],
)
def test_malformed_json_is_422(server, raw):
    response = httpx.post(
        server.url + "/predict", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert error_of(response)["code"] in ("invalid_json", "invalid_request")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (rb'{"text": "\ud800abc", "schema": {"a": null}}', "invalid_request"),
        (rb'{"text": "abc", "schema": {"\udfff": null}}', "invalid_schema"),
        (rb'{"text": "abc", "schema": "{\"a\": {\"\\ud800\": null}}"}', "invalid_schema"),
        (rb'{"items": [{"text": "\ud800", "schema": {"a": null}}]}', "invalid_request"),
    ],
)
def test_lone_surrogates_are_422_not_500(server, raw, code):
    path = "/predict/batch" if raw.startswith(b'{"items"') else "/predict"
    response = httpx.post(
        server.url + path, content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert error_of(response)["code"] == code and "Unicode" in response.json()["error"]["message"]


def test_too_large_inputs_are_413(server):
    long_text = post(server, "/predict", {"text": "长" * 401, "schema": {"a": None}})
    assert long_text.status_code == 413
    assert error_of(long_text)["code"] == "text_too_long"
    assert "401 characters" in long_text.json()["error"]["message"]

    in_batch = post(
        server,
        "/predict/batch",
        {
            "items": [
                {"text": "x", "schema": {"a": None}},
                {"text": "长" * 401, "schema": {"a": None}},
            ]
        },
    )
    assert in_batch.status_code == 413 and "items[1]" in error_of(in_batch)["message"]

    too_many = post(server, "/predict/batch", {"items": [{"text": "x", "schema": {"a": None}}] * 9})
    assert too_many.status_code == 413 and error_of(too_many)["code"] == "too_many_items"

    big = json.dumps({"text": "x" * 30000, "schema": {"a": None}}).encode()
    declared = httpx.post(
        server.url + "/predict", content=big, headers={"content-type": "application/json"}
    )
    assert declared.status_code == 413 and error_of(declared)["code"] == "body_too_large"

    def chunks():  # no Content-Length: the server has to count
        for i in range(0, len(big), 4096):
            yield big[i : i + 4096]

    streamed = httpx.post(
        server.url + "/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413 and error_of(streamed)["code"] == "body_too_large"


def test_schema_that_explodes_over_many_spans_is_422_too_complex(server):
    # The random checkpoint finds spans nearly everywhere, so every level multiplies the prompts;
    # without MAX_PROMPT_ROWS this one request would hold the worker for minutes.
    body = {
        "text": "今天上午小林在杭州西湖边买了两杯龙井茶。" * 19,
        "schema": {"甲": {"乙": {"丙": None}, "丁": {"戊": None}}, "己": {"庚": {"辛": None}}},
    }
    response = post(server, "/predict", body)
    assert response.status_code == 422, response.text[:300]
    err = error_of(response)
    assert err["code"] == "too_complex" and "300 prompt rows" in err["message"]
    assert post(server, "/predict", {"text": "今天", "schema": {"甲": None}}).status_code == 200


def test_unknown_route_and_method_are_json(server):
    missing = httpx.get(server.url + "/nope")
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"
    wrong = httpx.get(server.url + "/predict")
    assert wrong.status_code == 405 and error_of(wrong)["code"] == "method_not_allowed"


# ------------------------------------------------------------------------------ observability


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


# ------------------------------------------------------------------------------ batching


def _mixed_requests(examples: list[dict]) -> list[tuple[str, dict]]:
    """50 requests: every example as object and as JSON string, some with inner chains, and
    batches mixing examples."""
    out: list[tuple[str, dict]] = []
    for i, ex in enumerate(examples):
        out.append(("/predict", {"text": ex["text"], "schema": ex["schema"]}))
        out.append(
            (
                "/predict",
                {
                    "text": ex["text"],
                    "schema": json.dumps(ex["schema"], ensure_ascii=False),
                    "output_all_prefix": i % 2 == 0,
                },
            )
        )
    k = 0
    while len(out) < 50:
        items = [
            {"text": examples[(k + j) % len(examples)]["text"], "schema": examples[k % 3]["schema"]}
            for j in range(1 + k % 3)
        ]
        out.append(("/predict/batch", {"items": items}))
        k += 1
    return out


def test_concurrent_requests_equal_sequential_ones_and_share_batches(server, examples):
    requests = _mixed_requests(examples)
    assert len(requests) == 50
    sequential = []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for path, body in requests:
            response = client.post(path, json=body)
            assert response.status_code == 200, response.text
            sequential.append(response.json())
    before = server.metrics()

    async def all_at_once():
        limits = httpx.Limits(max_connections=60)
        async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:
            return await asyncio.gather(*(client.post(p, json=b) for p, b in requests))

    concurrent = asyncio.run(all_at_once())
    assert [r.status_code for r in concurrent] == [200] * 50
    assert [r.json() for r in concurrent] == sequential
    assert sum(bool(r.get("output") or r.get("results")) for r in sequential) > 10
    after = server.metrics()
    calls = server.value(after, "uninlu_batch_size_count") - server.value(
        before, "uninlu_batch_size_count"
    )
    single = server.value(after, "uninlu_batch_size_bucket", le="1.0") - server.value(
        before, "uninlu_batch_size_bucket", le="1.0"
    )
    assert calls > 0 and single < calls, "no backend call held more than one request"
