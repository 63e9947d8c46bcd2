"""Rounds bounded in time and no starvation, against real servers on the tiny checkpoint. The test
hook TEST_BACKEND_SECONDS_PER_TOKEN makes every backend call last (and be recorded as lasting)
its model tokens x a fixed figure, so the tiny model behaves like a slow machine and the
scheduler's decisions are deterministic. Calls, statuses and outputs are asserted, never
timings."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from app.model.pipeline import parse_schema, predict
from app.runtime.torch_backend import load_backend

TEXT = "青石镇位于浙江省西南部的山区，距县城约四十公里。" * 40  # 960 characters: 3 windows
MEDIUM = {"text": TEXT, "schema": {f"类型{i}": None for i in range(10)}}  # 12,726 model tokens
LARGE = {"text": TEXT, "schema": {f"类型{i}": None for i in range(20)}}  # twice the rows
SHORT = {"text": "今天上午，小林在杭州西湖边买了两杯龙井茶。", "schema": {"人物": None}}
ROOM = {"MAX_TEXT_CHARS": "2000", "MAX_BODY_BYTES": "100000", "MAX_SCHEMA_NODES": "64"}
CALLS = "uninlu_batch_size_count"  # one observation per backend call


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    """The single-request path: the synchronous driver, in this process."""
    backend, tokenizer = load_backend(tiny_model_dir, device="cpu", threads=1)

    def run(body: dict) -> dict:
        schema = parse_schema(body["schema"])
        out = predict(
            backend, tokenizer, body["text"], schema, body.get("output_all_prefix", False)
        )
        return {"output": out}

    return run


def gauge(server, metrics: dict, name: str, **labels: str) -> float:
    return server.value(metrics, name, **labels)


@pytest.mark.parametrize("slow", [False, True])
def test_round_sizes_follow_the_measured_cost(start_server, reference, slow):
    """Rounds of 40 ms: at 20 us per model token a round holds 2,000 tokens, at 80 us 500 (one
    score row): the same request alone takes 8 backend calls, or 33."""
    per_token = 8e-5 if slow else 2e-5
    server = start_server(
        TEST_BACKEND_SECONDS_PER_TOKEN=f"{per_token},{per_token}",
        ROUND_BUDGET_MS="40",
        BATCH_WAIT_MS="0",
        **ROOM,
    )
    before = server.metrics()
    for stage in ("encode", "score"):
        assert gauge(server, before, "uninlu_backend_seconds_per_token", stage=stage) == per_token
    answer = httpx.post(server.url + "/predict", json=MEDIUM, timeout=120)
    assert answer.status_code == 200 and answer.json() == reference(MEDIUM)
    calls = server.value(server.metrics(), CALLS) - server.value(before, CALLS)
    # 1,026 text tokens (3 windows), then 30 rows of 390 tokens. Fast: the text and 2 rows, then
    # 5 rows a round. Slow: a window a round (the last with no room for a row), then a row a round.
    assert calls == (33 if slow else 8)


# A short request of about 260 model tokens (26 ms at 0.1 ms per token): a round of 42 ms holds
# one of them, or one 39 ms row of the costly request, never two of either.
SHORTISH = {"text": "今天上午，小林在杭州西湖边买了两杯龙井茶。" * 6, "schema": {"人物": None}}


def _stream(url: str, stop: threading.Event, statuses: list) -> None:
    with httpx.Client(base_url=url, timeout=120) as client:
        while not stop.is_set():
            statuses.append(client.post("/predict", json=SHORTISH).status_code)


def test_a_costly_request_under_a_stream_of_short_ones_finishes_within_its_deadline(
    start_server, reference
):
    """At 0.1 ms per model token the costly request needs 2.4 s of backend time; a round of
    42 ms holds one of its rows or one short request, and with four clients sending short
    requests back to back a short one is always waiting, and goes first (least attained): the
    costly one would wait past its 10 s limit. As its deadline nears it goes first, and it
    finishes; the short ones are all answered too."""
    server = start_server(
        TEST_BACKEND_SECONDS_PER_TOKEN="0.0001,0.0001",
        ROUND_BUDGET_MS="42",
        REQUEST_TIMEOUT_SECONDS="10",
        BATCH_WAIT_MS="0",
        **ROOM,
    )
    before = server.metrics()
    stop = threading.Event()
    shorts: list[int] = []
    clients = [threading.Thread(target=_stream, args=(server.url, stop, shorts)) for _ in range(4)]
    for c in clients:
        c.start()
    try:
        costly = httpx.post(server.url + "/predict", json=LARGE, timeout=120)
    finally:
        stop.set()
        for c in clients:
            c.join(120)
    assert costly.status_code == 200, costly.text
    assert costly.json() == reference(LARGE)
    assert shorts and set(shorts) == {200}
    after = server.metrics()
    wasted = sum(
        v - before.get(k, 0.0) for k, v in after.items() if k[0] == "uninlu_wasted_tokens_total"
    )
    assert wasted == 0


def test_what_cannot_finish_in_time_is_refused_before_any_compute(start_server, reference):
    """A request whose own work cannot fit its limit: 504 at once, nothing spent; one that the
    backlog ahead of it would make late: 429 predicted_late with Retry-After; a short one still
    fits behind the same backlog."""
    server = start_server(
        TEST_BACKEND_SECONDS_PER_TOKEN="0.0001,0.0001",
        ROUND_BUDGET_MS="42",
        REQUEST_TIMEOUT_SECONDS="30",
        BATCH_WAIT_MS="0",
        **ROOM,
    )
    start = server.metrics()
    hopeless = httpx.post(
        server.url + "/predict",
        json=MEDIUM,
        headers={"X-Request-Timeout": "1", "X-Request-Id": "hopeless"},
        timeout=120,
    )
    assert hopeless.status_code == 504
    assert "cannot finish within its time limit of 1 s" in hopeless.json()["error"]["message"]
    after = server.metrics()
    assert server.value(after, CALLS) == server.value(start, CALLS)
    refused = server.value(after, "uninlu_refused_tokens_total", reason="deadline_exceeded")
    assert refused > 12000

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            limit = {"X-Request-Timeout": "4"}
            running = asyncio.ensure_future(client.post("/predict", json=LARGE, headers=limit))
            while server.value(server.metrics(), "uninlu_queue_depth") < 1:
                await asyncio.sleep(0.005)
            # 2.4 s of work ahead of it (an earlier deadline), 1.3 s of its own: not within its
            # 4 s, where alone it would be; a short one is.
            late = await client.post("/predict", json=MEDIUM, headers=limit)
            fits = await client.post("/predict", json=SHORT, headers=limit)
            return late, fits, await running

    late, fits, large = asyncio.run(scenario())
    assert late.status_code == 429 and late.json()["error"]["code"] == "overloaded"
    assert int(late.headers["retry-after"]) >= 1
    assert fits.status_code == 200 and fits.json() == reference(SHORT)
    assert large.status_code == 200 and large.json() == reference(LARGE)
    final = server.metrics()
    assert server.value(final, "uninlu_rejected_total", reason="predicted_late") == 1
    assert server.value(final, "uninlu_refused_tokens_total", reason="predicted_late") > 12000


def test_outputs_in_small_shared_rounds_equal_the_single_request_path(
    start_server, reference, examples
):
    """Rounds of 500 model tokens: every request is executed in many pieces, across many
    rounds, sharing calls with the others; each output equals the synchronous driver's."""
    server = start_server(TEST_BACKEND_SECONDS_PER_TOKEN="0.000002,0.000002",
                          ROUND_BUDGET_MS="1", **ROOM)  # fmt: skip
    bodies = [{"text": e["text"], "schema": e["schema"]} for e in examples]
    bodies += [MEDIUM, {**examples[1], "output_all_prefix": True}]
    bodies = [{k: v for k, v in b.items() if k != "task" and k != "label"} for b in bodies]

    async def everything():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            return await asyncio.gather(*(client.post("/predict", json=b) for b in bodies))

    answers = asyncio.run(everything())
    assert [a.status_code for a in answers] == [200] * len(bodies)
    assert [a.json() for a in answers] == [reference(b) for b in bodies]
