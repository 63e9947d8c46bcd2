"""Every error code of the HTTP API against a real `python -m app` on loopback with the tiny
checkpoint: bad schemas and bodies, malformed JSON, lone surrogates, oversized inputs, explosive
schemas and unknown routes, each a JSON error body naming the problem, never a 500."""

from __future__ import annotations

import json

import httpx
import pytest
from server_client import error_of, post

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
