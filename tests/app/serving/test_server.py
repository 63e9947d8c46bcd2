"""The HTTP API against a real `python -m app` on loopback with the tiny checkpoint: endpoints and
batching that changes nothing. Every error code: test_server_errors.py; metrics and logs:
test_server_observability.py."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
from server_client import post

from app.model.pipeline import predict as pipeline_predict
from app.serving.metrics import PREDICT_ROUTES

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
