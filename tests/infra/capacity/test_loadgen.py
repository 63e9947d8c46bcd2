"""The load generator and one step's statistics (infra/capacity/loadgen.py, stats.py), no timing
assertions: arrivals, the step summary, and the open and closed loops against a real loopback HTTP
server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from infra.capacity import loadgen, stats
from infra.capacity.stats import Sample


def test_poisson_arrivals_are_ordered_inside_the_window_at_the_rate():
    times = loadgen.poisson_arrivals(50.0, 20.0, np.random.default_rng(1))
    assert times == sorted(times) and times[0] > 0 and times[-1] < 20.0
    # 1000 expected arrivals: a Poisson count stays within 5 standard deviations (about 158).
    assert abs(len(times) - 1000) < 160
    assert loadgen.poisson_arrivals(50.0, 20.0, np.random.default_rng(1)) == times
    with pytest.raises(ValueError):
        loadgen.poisson_arrivals(0, 10, np.random.default_rng(0))


def test_summary_counts_errors_and_includes_failures_in_latency():
    samples = [Sample(0.1 * i, 0.1 * (i + 1), 200) for i in range(18)]
    samples += [Sample(2.0, 5.0, 503), Sample(2.1, 30.0, 0, "timeout")]
    step = stats.summarise(samples, offered_rate=2.0, duration=10.0)
    assert step["sent"] == 20 and step["ok"] == 18 and step["errors"] == 2
    assert step["errors_by_kind"] == {"503": 1, "timeout": 1}
    assert step["throughput_rps"] == pytest.approx(18 / 32.1)  # until the last answer at 32.1 s
    fast = stats.summarise(samples[:18], offered_rate=2.0, duration=10.0)
    assert fast["throughput_rps"] == pytest.approx(1.8)  # all answered within the 10 s window
    assert step["p50_s"] == pytest.approx(np.percentile([s.latency for s in samples], 50))
    assert step["p99_s"] > 5.0  # the timed-out request counts
    assert not stats.meets_slo(step, 1.0)


def test_loadgen_refuses_non_loopback_targets():
    with pytest.raises(ValueError, match="loopback"):
        loadgen.run_open_loop("http://example.com", [{}], 1.0, 1.0)


class _Handler(BaseHTTPRequestHandler):
    """Answers 200, or 500 for bodies whose text is "fail" or "borrow" ("Already borrowed")."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status = 500 if body["text"] in ("fail", "borrow") else 200
        payload = b'{"output": []}'
        if body["text"] == "borrow":  # the seed-style peer's tokenizer race
            payload = b'{"error": "RuntimeError: Already borrowed"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_open_loop_against_a_loopback_server_records_every_request():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        bodies = [{"text": t, "schema": {}} for t in ("ok", "fail", "borrow")]
        samples = loadgen.run_open_loop(url, bodies, rate=40.0, duration=1.0, seed=3)
    finally:
        server.shutdown()
    assert len(samples) > 10
    for s in samples:
        assert s.status == (200 if bodies[s.body_index]["text"] == "ok" else 500)
    step = stats.summarise(samples, 40.0, 1.0)
    assert step["errors"] == step["errors_by_kind"]["500"] > 0
    borrowed = sum(1 for s in samples if bodies[s.body_index]["text"] == "borrow")
    assert step["already_borrowed"] == borrowed > 0


class _SlowHandler(_Handler):
    """Each answer takes 50 ms and the handler notes the most requests it held at once."""

    lock = threading.Lock()
    inside = 0
    most_inside = 0

    def do_POST(self):
        cls = type(self)
        with cls.lock:
            cls.inside += 1
            cls.most_inside = max(cls.most_inside, cls.inside)
        time.sleep(0.05)
        with cls.lock:
            cls.inside -= 1
        super().do_POST()


def test_closed_loop_keeps_each_client_busy_back_to_back():
    """3 clients against a 50 ms server for 1 s: never more than 3 requests at once, each client
    sends again as soon as its answer came, so about 3 / 0.05 = 60 answers (at least 20 with
    HTTP overhead; a client that waited would send far fewer), and the summary's throughput is
    the server's answer rate."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        bodies = [{"text": "ok", "schema": {}}]
        samples = loadgen.run_closed_loop(url, bodies, clients=3, duration=1.0)
    finally:
        server.shutdown()
    assert _SlowHandler.most_inside == 3
    assert 20 <= len(samples) <= 66
    assert all(s.status == 200 and s.latency >= 0.05 for s in samples)
    assert max(s.sent_at for s in samples) < 1.0  # nothing is sent after the duration
    step = stats.summarise(samples, 0.0, 1.0)
    assert step["throughput_rps"] == len(samples) / step["window_s"]
