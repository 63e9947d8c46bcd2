"""The benchmark's pure parts (no timing assertions): arrivals, statistics, SLO search, agreement,
report files, the request mix, and the open-loop generator against a real loopback HTTP server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from bench import agreement, loadgen, mix, report, stats
from bench.flops import count_request_flops, measure_matmul_peak
from bench.stats import Sample


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


def test_max_rate_under_slo_takes_the_best_step_that_meets_it():
    def step(rps, p95, errors=0):
        return {"sent": 10, "throughput_rps": rps, "p95_s": p95, "errors": errors}

    steps = [step(3, 0.2), step(6, 0.5), step(9, 0.9, errors=1), step(12, 2.5)]
    assert stats.max_rate_under_slo(steps, 1.0)["throughput_rps"] == 6
    assert stats.max_rate_under_slo([step(1, 3.0)], 1.0) is None


def test_agreement_counts_identical_outputs_and_spans():
    item = [{"type": "人物", "span": "谷口清太郎", "offset": [18, 23]}]
    other = [{"type": "人物", "span": "谷口", "offset": [18, 20]}]
    ref = {"a": [item], "b": [item, other], "c": []}
    assert agreement.compare(ref, ref)["identical_outputs"] == 3
    result = agreement.compare(ref, {"a": [item], "b": [item], "c": []})
    assert result["identical_outputs"] == 2
    assert result["span_share_identical"] == pytest.approx(2 / 3)
    assert agreement.compare(ref, {})["span_share_identical"] == 0.0


def test_loadgen_refuses_non_loopback_targets():
    with pytest.raises(ValueError, match="loopback"):
        loadgen.run_open_loop("http://example.com", [{}], 1.0, 1.0)


def test_examples_file_lookup(tmp_path, monkeypatch):
    own = tmp_path / "mine.json"
    own.write_text('{"examples": []}')
    assert mix.find_examples(str(own)) == own
    assert mix.find_examples() == mix.DEFAULT_EXAMPLES
    monkeypatch.setattr(mix, "DEFAULT_EXAMPLES", tmp_path / "absent.json")
    with pytest.raises(FileNotFoundError, match=r"examples\.json not found"):
        mix.find_examples()


def test_single_level_mix_of_the_shared_examples():
    examples = mix.load_examples(mix.find_examples())
    bodies = mix.single_level_mix(examples)
    assert 0 < len(bodies) < len(examples)
    assert all(all(v is None for v in b["schema"].values()) for b in bodies)
    with pytest.raises(ValueError):
        mix.single_level_mix([e for e in examples if not mix.is_single_level(e["schema"])])


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


def test_retained_capacity_compares_the_saturated_steps():
    quiet = {"saturated": {"throughput_rps": 8.0}}
    assert stats.retained_capacity(quiet, {"saturated": {"throughput_rps": 4.0}}) == 0.5
    assert stats.retained_capacity(quiet, {"saturated": None}) is None
    assert stats.retained_capacity({}, quiet) is None


def test_flop_figures_count_only_answered_requests():
    from bench.__main__ import flop_figures

    samples = [Sample(0, 0.1, 200, body_index=0), Sample(0, 0.1, 200, body_index=1)]
    samples += [Sample(0, 0.1, 503, body_index=1), Sample(0, 0.1, 0, "timeout", body_index=0)]
    figures = flop_figures(samples, 2.0, body_flops=[10e9, 30e9], peak=100.0)
    assert figures["model_gflops"] == pytest.approx(20.0)  # (10 + 30) GFLOP over 2 s
    assert figures["flop_utilisation_pct"] == pytest.approx(20.0)


def _results():
    steps = [
        {
            **stats.summarise([Sample(0, lat, 200) for lat in (0.1, 0.2, 0.3)], rate, 10.0),
            "mean_batch_size": 2.0,
            "model_gflops": 30.0,
            "flop_utilisation_pct": 20.0,
        }
        for rate in (3.0, 6.0)
    ]
    config = {
        "name": "onnx-int8",
        "ready_s": 4.2,
        "peak_rss_bytes": 600 * 2**20,
        "steps": steps,
        "max_under_slo": steps[-1],
        "agreement": {"summary": "9/9 outputs identical, 100% of spans"},
    }
    return {
        "model": "m",
        "machine": {
            "cpus": 2,
            "cpu_model": "x",
            "matmul_peak_gflops": 150.0,
            "matmul_peak_threads": 2,
        },
        "slo_p95_s": 1.0,
        "common_rate": 3.0,
        "step_seconds": 10.0,
        "mix_size": 9,
        "flops_per_request_gflop": 18.0,
        "configs": [config],
    }


def test_report_writes_table_json_and_png(tmp_path):
    paths = report.write_all(_results(), tmp_path)
    table = paths["table"].read_text(encoding="utf-8")
    assert "| onnx-int8 | 0.30 |" in table  # max throughput under the SLO (3 requests / 10 s)
    assert "9/9 outputs identical" in table and "600" in table
    assert json.loads(paths["json"].read_text())["configs"][0]["name"] == "onnx-int8"
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_matmul_peak_is_measured():
    peak = measure_matmul_peak(threads=1, sizes=(64,), seconds=0.05)
    assert peak["gflops"] > 0 and peak["size"] == 64 and peak["threads"] == 1


def test_flops_grow_with_the_text(tiny_model_dir):
    schema = {"人物": None}
    short, long = count_request_flops(
        str(tiny_model_dir),
        [{"text": "我爱北京", "schema": schema}, {"text": "我爱北京" * 20, "schema": schema}],
    )
    assert 0 < short < long
