"""One pod's capacity, measured: the benchmark's SLO search on a real server pinned to the pod's
CPUs, and its start-up-to-ready time; the planner records it (infra/capacity/records.py) for
itself and the stack check in infra/config.py.

A pod's CPU limit is a CFS quota, not a CPU set; pinning the server with `taskset` to that many
CPUs (and as many intra-op threads) is the closest a laptop gets without a cgroup. The load
generator runs in this process, outside the pinned set when the machine has spare cores.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from infra.capacity import loadgen, stats
from infra.capacity.server import ServerProcess

BACKENDS = {"onnx": "onnx", "onnx-int8": "onnx-int8", "torch": "torch"}
# Offered texts/s per CPU of the rate ladders: fine steps where fp32 saturates (about 1-2.4 per
# CPU on an AVX2 machine, more with AVX-512), wider ones for int8 (about 7.5 per CPU).
LADDERS = {
    "onnx": (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0),
    "torch": (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0),
    "onnx-int8": (1.5, 3.0, 4.5, 6.0, 7.0, 8.0, 9.0, 10.5, 12.0),
}
DEFAULT_MAX_QUEUE = 128  # app/serving/settings.py MAX_QUEUE default


def pinned_cpus(cpus: float) -> str:
    """The CPU list for taskset: the first ceil(cpus) CPUs of the machine."""
    n = max(1, math.ceil(cpus))
    available = os.cpu_count() or 1
    if n > available:
        raise SystemExit(f"the pod's CPU limit is {cpus:g}, but this machine has {available} CPUs")
    return f"0-{n - 1}" if n > 1 else "0"


def pinned_server(
    model: Path, runtime: str, cpus: float, max_queue: int, log: Path
) -> ServerProcess:
    """The server as the stack's pod runs it: its runtime, threads = CPUs, its queue limit,
    pinned to that many CPUs (torch made unimportable for the ONNX runtimes, as in their image)."""
    env = {
        "MODEL_PATH": str(model),
        "BACKEND": BACKENDS[runtime],
        "TORCH_THREADS": str(max(1, math.ceil(cpus))),
        "MAX_QUEUE": str(max_queue),
        "LOG_LEVEL": "WARNING",
        "GRACEFUL_SHUTDOWN_SECONDS": "2",
    }
    server = ServerProcess(env, log, without_torch=runtime != "torch")
    server.command = ["taskset", "-c", pinned_cpus(cpus), *server.command]
    return server


def step_figures(samples: list[stats.Sample], rate: float, seconds: float) -> dict:
    """One load step as the curve keeps it: the bench summary plus the 429 share and the p95 of
    the answered texts (what the simulation's queue model predicts)."""
    step = stats.summarise(samples, rate, seconds)
    answered = [s.latency for s in samples if s.status == 200]
    return {
        "offered": rate,
        "throughput": step["throughput_rps"],
        "p50_ms": 1000 * (step["p50_s"] or 0.0),
        "p95_ms": 1000 * (step["p95_s"] or 0.0),
        "p95_answered_ms": 1000 * (stats.percentile(answered, 95) or 0.0),
        "share_429": sum(s.status == 429 for s in samples) / max(1, len(samples)),
        "errors": step["errors"],
        "errors_by_kind": step["errors_by_kind"],
        "meets_slo": None,  # filled by the caller, which knows the SLO
    }


def measure(
    model: Path,
    runtime: str,
    cpus: float,
    slo_ms: int,
    bodies: list[dict],
    step_seconds: float,
    max_queue: int,
    log_dir: Path,
    rates: list[float] | None = None,
) -> dict:
    """The SLO search on a pinned server: rising open-loop rates until p95 breaks the SLO, then
    one step above to see the saturated throughput and the 429s. Returns a capacity record."""
    ladder = rates or [round(r * cpus, 2) for r in LADDERS[runtime]]
    slo_s = slo_ms / 1000
    curve: list[dict] = []
    log = log_dir / f"capacity-{runtime}-{cpus:g}cpu.log"
    with pinned_server(model, runtime, cpus, max_queue, log) as server:
        ready_s = server.ready_s
        print(f"   ready after {ready_s:.1f} s (pinned to CPUs {pinned_cpus(cpus)})", flush=True)
        loadgen.run_open_loop(server.base_url, bodies, 1.0, 5.0, seed=1, timeout=120)  # warm
        broke_at = None
        for rate in ladder:
            samples = loadgen.run_open_loop(
                server.base_url, bodies, rate, step_seconds, seed=int(rate * 1000), timeout=300
            )
            point = step_figures(samples, rate, step_seconds)
            summary = stats.summarise(samples, rate, step_seconds)
            point["meets_slo"] = stats.meets_slo(summary, slo_s)
            curve.append(point)
            print(
                f"   {rate:>6g} texts/s offered: {point['throughput']:.2f} answered/s, p95 "
                f"{point['p95_ms']:.0f} ms, 429 {100 * point['share_429']:.0f} %",
                flush=True,
            )
            if not point["meets_slo"]:
                broke_at = rate
                break
        if broke_at is not None:  # one step well above: the plateau and the 429s
            rate = round(broke_at * 1.5, 2)
            samples = loadgen.run_open_loop(
                server.base_url, bodies, rate, step_seconds, seed=7, timeout=300
            )
            point = step_figures(samples, rate, step_seconds)
            point["meets_slo"] = False
            curve.append(point)
            print(
                f"   {rate:>6g} texts/s offered: {point['throughput']:.2f} answered/s, p95 "
                f"{point['p95_ms']:.0f} ms, 429 {100 * point['share_429']:.0f} %",
                flush=True,
            )
    good = [p for p in curve if p["meets_slo"]]
    return {
        "runtime": runtime,
        "cpus": float(cpus),
        "slo_p95_ms": int(slo_ms),
        "texts_per_second": max((p["throughput"] for p in good), default=0.0),
        "service_rate": max(p["throughput"] for p in curve),
        "max_queue": max_queue,
        "ready_seconds": ready_s,
        "step_seconds": step_seconds,
        "curve": curve,
    }
