"""`--contention` (the CPU hog, the contended ladder, the retained share), the padded-token share
from /metrics deltas, the peer's venv and command, and the report tables that show them."""

from __future__ import annotations

import os
import time

import psutil
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from bench import peer, report, stats
from bench.__main__ import PEER, contended_rates, parse_args
from bench.contention import CpuHog, hog_core
from bench.server import TOKENS_METRIC, padded_share, parse_counters


def _metrics_text(tokens: dict[tuple[str, str], int], batches: list[int]) -> str:
    """What the server's /metrics says: the counter app/serving/batching.py increments and the
    batch-size histogram, made by prometheus_client itself."""
    registry = CollectorRegistry()
    counter = Counter(
        TOKENS_METRIC.removesuffix("_total"), "tokens", ["stage", "kind"], registry=registry
    )
    for (stage, kind), n in tokens.items():
        counter.labels(stage=stage, kind=kind).inc(n)
    histogram = Histogram("uninlu_batch_size", "rows", registry=registry, buckets=(1, 8, 64))
    for rows in batches:
        histogram.observe(rows)
    return generate_latest(registry).decode()


def test_padded_share_comes_from_counter_deltas():
    before = parse_counters(
        _metrics_text({("encode", "real"): 100, ("encode", "padded"): 100}, [4])
    )
    after = parse_counters(
        _metrics_text(
            {
                ("encode", "real"): 400,  # +300 real, +100 padded: 25 % in this window
                ("encode", "padded"): 200,
                ("score", "real"): 90,  # +90 real, +10 padded: 10 %
                ("score", "padded"): 10,
            },
            [4, 2, 6],
        )
    )
    assert after["batch"] == (12.0, 3.0) and before["batch"] == (4.0, 1.0)
    shares = padded_share(before, after)
    assert shares["encode"] == pytest.approx(0.25)
    assert shares["score"] == pytest.approx(0.10)
    assert shares["all"] == pytest.approx(110 / 500)


def test_padded_share_is_none_without_the_counter():
    empty = parse_counters("")  # the peer serves no /metrics
    assert empty == {"batch": (0.0, 0.0), "tokens": {}}
    assert padded_share(empty, parse_counters(_metrics_text({}, [3]))) == {"all": None}


def test_the_hog_keeps_its_core_busy_and_ends_itself():
    core = hog_core()
    assert core in os.sched_getaffinity(0)
    with CpuHog(core, max_seconds=2.0) as hog:
        process = psutil.Process(hog.proc.pid)
        deadline = time.monotonic() + 10
        while process.cpu_affinity() != [core] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.cpu_affinity() == [core]
        assert hog.running()
    assert not hog.running()  # stopped at the end of the block
    with CpuHog(core, max_seconds=0.2) as bounded:
        assert bounded.proc.wait(timeout=30) == 0  # ends by itself at its deadline
    with pytest.raises(ValueError, match="not available"):
        CpuHog(max(os.sched_getaffinity(0)) + 1)


def test_contended_ladder_adds_the_halves_and_the_share_is_relative():
    assert contended_rates([3, 4, 6]) == [1.5, 2, 2.25, 3, 4, 4.5, 6]
    quiet = {"max_under_slo": {"throughput_rps": 10.0}}
    assert stats.retained_share(quiet, {"max_under_slo": {"throughput_rps": 4.5}}) == 0.45
    assert stats.retained_share(quiet, {"max_under_slo": None}) == 0.0
    assert stats.retained_share({"max_under_slo": None}, quiet) is None


def test_slow_steps_last_long_enough_for_their_share_of_requests():
    assert stats.step_duration(6, 15) == 15
    assert stats.step_duration(0.5, 15) == 2 * stats.MIN_STEP_REQUESTS
    assert stats.step_duration(1, 15) >= stats.MIN_STEP_REQUESTS


def test_flags_add_the_contended_runs_and_the_peer():
    args = parse_args(["--contention", "--peer"])
    assert args.contention and args.peer
    assert not parse_args([]).contention and PEER.peer and PEER.name == "peer"


def test_peer_requirements_are_pinned_and_cpu_only():
    pins = {}
    for raw in peer.REQUIREMENTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"{line!r} is not pinned"
            pins[name.lower()] = version
    assert pins["torch"].endswith("+cpu")  # never a CUDA build
    assert pins["transformers"].startswith("4.")  # ModelScope needs transformers < 5
    assert {"modelscope", "fastapi", "uvicorn", "scipy", "addict"} <= set(pins)
    assert not any(name.startswith("nvidia") for name in pins)


def test_peer_command_runs_two_uvicorn_workers():
    command = peer.command(peer.DEFAULT_VENV / "bin" / "python")
    assert command[1:4] == ["-m", "uvicorn", "peer_server:app"]
    assert command[command.index("--workers") + 1] == "2"
    assert command[command.index("--app-dir") + 1] == str(peer.SERVER.parent)
    assert {"{host}", "{port}"} <= set(command)


def _ladder(best: float | None, p95: float, errors: int = 0, borrowed: int = 0) -> dict:
    step = {
        "offered_rps": 3.0,
        "arrival_rps": 3.0,
        "throughput_rps": best or 0.0,
        "p50_s": p95 / 2,
        "p95_s": p95,
        "p99_s": p95,
        "errors": errors,
        "errors_by_kind": {"500": errors} if errors else {},
        "already_borrowed": borrowed,
    }
    return {"steps": [step], "max_under_slo": {"throughput_rps": best} if best else None}


def test_report_shows_padding_contention_and_the_peer():
    ours = {
        "name": "onnx",
        **_ladder(6.0, 0.4),
        "padded_share": {"encode": 0.12, "score": 0.3, "all": 0.2},
        "saturated": {"throughput_rps": 8.0, "errors": 0},
        "contended": {**_ladder(3.0, 0.8), "saturated": {"throughput_rps": 4.4, "errors": 1}},
        "retained_share": 0.5,
        "retained_capacity": 0.55,
        "peak_rss_bytes": 0,
    }
    the_peer = {"name": "peer", **_ladder(2.0, 1.5, errors=7, borrowed=5), "peak_rss_bytes": 0}
    results = {
        "model": "m",
        "machine": {
            "cpus": 2,
            "cpu_model": "x",
            "matmul_peak_gflops": 1.0,
            "matmul_peak_threads": 2,
        },
        "slo_p95_s": 1.0,
        "common_rate": 3.0,
        "step_seconds": 1.0,
        "mix_size": 1,
        "flops_per_request_gflop": 1.0,
        "configs": [ours, the_peer],
    }
    text = report.markdown(results)
    assert "| onnx | 12 % | 30 % | 20 % |" in text
    assert "| peer | - | - | - |" in text
    assert "| onnx | 6.00 | 3.00 | 50 % | 8.00 | 4.40 | 55 % | 1 |" in text
    assert "| onnx | 6.00 | 3.0 | 400 | 0 | 0 |" in text
    assert "| peer | 2.00 | 1.0 | 1500 | 7 | 5 |" in text


def test_padded_share_of_a_real_server(tiny_model_dir, tmp_path):
    """The counter name and labels the report reads are the ones the server exports."""
    import httpx

    from bench.server import ServerProcess

    env = {"MODEL_PATH": str(tiny_model_dir), "TORCH_THREADS": "1", "LOG_LEVEL": "WARNING"}
    with ServerProcess(env, tmp_path / "server.log") as server:
        before = server.counters()
        bodies = [
            {"text": "小林在杭州。", "schema": {"人物": None}},
            {"text": "王芳在2021年加入了深圳的一家机器人公司。" * 3, "schema": {"组织": None}},
        ]
        response = httpx.post(
            server.base_url + "/predict/batch", json={"items": bodies}, timeout=60
        )
        assert response.status_code == 200
        shares = padded_share(before, server.counters())
    assert set(shares) == {"encode", "score", "all"}
    # Tokens were counted for both stages (how much is padding depends on the length grouping).
    assert all(0.0 <= shares[stage] < 1.0 for stage in ("encode", "score", "all"))
