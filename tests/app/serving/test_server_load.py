"""Load behaviour of a real `python -m app`: overload answers 429 at once from a bounded queue,
and SIGTERM during load drains (readiness 503 first) without failing any admitted request."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx

# A request heavy enough for the tiny model that many pile up: 12 prompts over ~400 tokens.
HEAVY = {
    "text": ("今天上午，小林在杭州西湖边买了两杯龙井茶，又给远在成都的姐姐寄了一盒。" * 12)[:390],
    "schema": {f"类型{i}": None for i in range(12)},
}


async def _fire(url: str, n: int, body: dict) -> list[httpx.Response | Exception]:
    limits = httpx.Limits(max_connections=n + 5)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        return await asyncio.gather(
            *(client.post("/predict", json=body) for _ in range(n)), return_exceptions=True
        )


def _poll_metric(server, name: str, stop: threading.Event, seen: list[float]) -> None:
    while not stop.is_set():
        try:
            seen.append(server.value(server.metrics(), name))
        except httpx.TransportError:
            return
        time.sleep(0.02)


def test_overload_gets_429_at_once_and_accepted_work_is_answered(server, start_server):
    reference = httpx.post(server.url + "/predict", json=HEAVY, timeout=60).json()
    busy = start_server(
        MAX_QUEUE="4", MAX_BATCH_ITEMS="4", MAX_BATCH_REQUESTS="2", LOG_REQUEST_TEXT="true"
    )
    before = busy.metrics()
    depths: list[float] = []
    stop = threading.Event()
    poller = threading.Thread(target=_poll_metric, args=(busy, "uninlu_queue_depth", stop, depths))
    poller.start()
    try:
        responses = asyncio.run(_fire(busy.url, 60, HEAVY))
    finally:
        stop.set()
        poller.join()
    assert not [r for r in responses if isinstance(r, Exception)]
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}, codes  # no 5xx, nothing else
    refused = [r for r in responses if r.status_code == 429]
    accepted = [r for r in responses if r.status_code == 200]
    assert refused and accepted
    for r in refused:
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "overloaded"
    assert all(r.json() == reference for r in accepted)
    assert depths and max(depths) <= 4  # the queue never grew past MAX_QUEUE
    after = busy.metrics()
    rejected = busy.value(after, "uninlu_rejected_total", reason="queue_full") - busy.value(
        before, "uninlu_rejected_total", reason="queue_full"
    )
    assert rejected == len(refused)
    assert busy.value(after, "uninlu_queue_depth") == 0
    assert httpx.get(busy.url + "/ready").status_code == 200  # still serving afterwards
    # LOG_REQUEST_TEXT=true (off by default) puts the text in the access line.
    access = [r for r in busy.log_records() if r.get("logger") == "uninlu.access"]
    assert any(r.get("text") == HEAVY["text"] for r in access)


def test_sigterm_during_load_drains_without_failing_admitted_requests(server, start_server):
    reference = httpx.post(server.url + "/predict", json=HEAVY, timeout=60).json()
    draining = start_server(DRAIN_DELAY_SECONDS="1", MAX_BATCH_REQUESTS="2")
    n = 8
    results: list = []
    worker = threading.Thread(
        target=lambda: results.extend(asyncio.run(_fire(draining.url, n, HEAVY)))
    )
    worker.start()
    deadline = time.monotonic() + 60
    admitted = 0.0
    while admitted < 2:  # SIGTERM while several requests are admitted and unfinished
        assert worker.is_alive() and time.monotonic() < deadline, "no load to interrupt"
        admitted = draining.value(draining.metrics(), "uninlu_queue_depth")
        time.sleep(0.01)

    draining.terminate()
    ready_seen: list[int] = []
    refused_new: list[int] = []
    while draining.proc.poll() is None:
        try:
            ready_seen.append(httpx.get(draining.url + "/ready", timeout=5).status_code)
            if len(refused_new) < 1:
                late = httpx.post(draining.url + "/predict", json=HEAVY, timeout=5)
                refused_new.append(late.status_code)
        except httpx.TransportError:  # the listener is closed: keep waiting for the exit
            time.sleep(0.05)
    worker.join(timeout=60)

    # uvicorn re-raises the caught SIGTERM after its graceful shutdown: "killed by SIGTERM".
    assert draining.proc.returncode in (0, -15), draining.logs()
    assert 503 in ready_seen and 200 not in ready_seen  # readiness flipped at once, before exit
    assert refused_new in ([503], [])  # new work after SIGTERM is refused, not queued
    assert len(results) == n
    assert all(isinstance(r, httpx.Response) for r in results), results
    done = [r for r in results if r.status_code == 200]
    refused = [r for r in results if r.status_code != 200]
    # Every request admitted before SIGTERM was answered in full; later ones were refused cleanly.
    assert len(done) >= admitted
    assert all(r.json() == reference for r in done)
    assert all(
        r.status_code == 503 and r.json()["error"]["code"] == "shutting_down" for r in refused
    )
    messages = [r.get("message", "") for r in draining.log_records()]
    drain_at = next(i for i, m in enumerate(messages) if m.startswith("draining"))
    finished_at = next(i for i, m in enumerate(messages) if m.startswith("Finished server process"))
    assert drain_at < finished_at
