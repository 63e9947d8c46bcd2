"""`make bench`: the model server under open-loop load, baseline against our configurations.

For each configuration a real server (`python -m app`) is started on a full-size random
checkpoint; Poisson load with the single-level request mix of examples.json runs at rising rates
until p95 latency breaks the SLO. Writes bench/out/results.json, report.md and
latency_vs_throughput.png, and prints the tables.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import agreement, flops, kernels, mix, peer, report, stats
from bench.contention import CpuHog
from bench.server import ServerProcess, padded_share
from infra.capacity import loadgen
from infra.capacity.checkpoint import ensure_model
from infra.capacity.machine import machine_info

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / ".models" / "base"
DEFAULT_OUT = REPO / "bench" / "out"


@dataclass(frozen=True)
class Config:
    name: str
    description: str
    env: dict[str, str]
    rates: list[float]
    onnx: bool = False
    peer: bool = False
    extra: dict = field(default_factory=dict)


def configurations(threads: int) -> list[Config]:
    """Baseline first (it is the agreement reference), then ours, cheapest to fastest."""
    common = {"TORCH_THREADS": str(threads)}
    # Rates per kind of configuration: fine steps where fp32 saturates (3.5 r/s on 2 cores of an
    # AMD EPYC whose matmul peak is 158 GFLOP/s, 5-8 on an AVX-512 Xeon of 350-450), wider ones
    # up to where int8 does; every ladder holds the common rate (3 r/s), and steps below it so a
    # slow machine still has a rate within the SLO.
    fp32 = [1, 1.5, 2, 3, 4, 5, 6, 8, 10, 12]
    ladder = [2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 18, 21, 24]
    return [
        Config(
            "baseline",
            "torch fp32, one request per model call (no cross-request batching), like the seed",
            {**common, "BACKEND": "torch", "MAX_BATCH_REQUESTS": "1"},
            [1, 1.5, 2, 3, 4, 5, 6],
        ),
        Config(
            "torch",
            "torch fp32, batching, always TORCH_THREADS",
            {**common, "BACKEND": "torch"},
            fp32,
        ),
        Config("onnx", "ONNX Runtime fp32, batching", {**common, "BACKEND": "onnx"}, fp32, True),
        Config(
            "onnx-int8",
            "ONNX Runtime static int8 (QDQ, calibrated scales), batching",
            {**common, "BACKEND": "onnx-int8"},
            ladder,
            True,
        ),
        Config(
            "onnx-int8-1t",
            "ONNX Runtime static int8, batching, 1 thread (tuning: leaves a core to HTTP)",
            {**common, "BACKEND": "onnx-int8", "TORCH_THREADS": "1"},
            ladder,
            True,
        ),
    ]


PEER = Config(
    "peer",
    "the ModelScope siamese-uie pipeline served the seed's way (FastAPI, 2 uvicorn workers, one "
    "pipeline each; own venv .venv-peer)",
    {},
    [0.5, 1, 1.5, 2, 3, 4, 5, 6],
    peer=True,
)


def probe_outputs(base_url: str, examples: list[dict]) -> dict[str, list]:
    """Every example once (this is also the warm-up of a configuration)."""
    outputs = {}
    with httpx.Client(base_url=base_url, timeout=120) as client:
        for e in examples:
            response = client.post("/predict", json={"text": e["text"], "schema": e["schema"]})
            if response.status_code == 200:
                outputs[e["task"]] = response.json()["output"]
    return outputs


def contended_rates(rates: list[float]) -> list[float]:
    """With a core taken, a configuration serves about half its rate: the ladder's halves and
    three quarters too (the retained share is then read to a quarter of a step, not a half)."""
    return sorted({r / 2 for r in rates} | {r * 3 / 4 for r in rates} | set(rates))


def flop_figures(samples, window_s: float, body_flops, peak: float) -> dict:
    """The model's useful work in a step: GFLOP/s of the answered requests and its share of the
    matmul peak (padding and failed requests count for nothing)."""
    done = sum(body_flops[s.body_index] for s in samples if s.status == 200)
    gflops = done / window_s / 1e9
    return {"model_gflops": gflops, "flop_utilisation_pct": 100 * gflops / peak}


def run_ladder(server, rates, args, bodies, body_flops, peak, min_rate) -> dict:
    """Rising open-loop rates until p95 breaks the SLO (at or above `min_rate`): the steps, the
    best step within the SLO and the padded-token share of all steps together."""
    steps = []
    first = server.counters()
    for rate in rates:
        if args.max_rate and rate > args.max_rate:
            break
        before = server.counters()
        duration = stats.step_duration(rate, args.step_seconds)
        samples = loadgen.run_open_loop(
            server.base_url,
            bodies,
            rate,
            duration,
            seed=int(rate * 1000),
            timeout=args.timeout,
        )
        after = server.counters()
        step = stats.summarise(samples, rate, duration)
        calls = after["batch"][1] - before["batch"][1]
        step["model_calls"] = calls
        rows = after["batch"][0] - before["batch"][0]
        step["mean_batch_size"] = rows / calls if calls else None
        step["padded_share"] = padded_share(before, after).get("all")
        step.update(flop_figures(samples, step["window_s"], body_flops, peak))
        steps.append(step)
        print(
            f"   {rate:>5g} r/s offered: {step['throughput_rps']:.2f} r/s, p50 "
            f"{step['p50_s']:.3f} s, p95 {step['p95_s']:.3f} s, errors {step['errors']}, "
            f"batch {step['mean_batch_size'] or 0:.1f}",
            flush=True,
        )
        if not stats.meets_slo(step, args.slo) and rate >= min_rate:
            break
    return {
        "steps": steps,
        "max_under_slo": stats.max_rate_under_slo(steps, args.slo),
        "padded_share": padded_share(first, server.counters()),
    }


def run_saturation(server, args, bodies, body_flops, peak) -> dict | None:
    """Closed loop (`--saturation-clients` clients back to back): the configuration's capacity,
    which the SLO does not cut off; None when turned off."""
    if not args.saturation_clients:
        return None
    samples = loadgen.run_closed_loop(
        server.base_url,
        bodies,
        args.saturation_clients,
        args.saturation_seconds,
        seed=args.saturation_clients,
        timeout=args.timeout,
    )
    step = stats.summarise(samples, 0.0, args.saturation_seconds)
    step["clients"] = args.saturation_clients
    step.update(flop_figures(samples, step["window_s"], body_flops, peak))
    print(
        f"   saturated ({args.saturation_clients} clients back to back): "
        f"{step['throughput_rps']:.2f} r/s, p50 {step['p50_s']:.3f} s, errors {step['errors']}, "
        f"{step['flop_utilisation_pct']:.0f} % of the matmul peak",
        flush=True,
    )
    return step


def server_command(config: Config) -> list[str] | None:
    """The peer runs its own server in its own venv; every other configuration `python -m app`."""
    return peer.command(peer.ensure_venv()) if config.peer else None


def run_config(config: Config, args, bodies, body_flops, examples, peak, log_dir) -> dict:
    # A short grace period: after an overloaded step nobody waits for the backlog.
    env = {
        "MODEL_PATH": str(args.model),
        "LOG_LEVEL": "WARNING",
        "GRACEFUL_SHUTDOWN_SECONDS": "2",
        **config.env,
    }
    command = server_command(config)
    print(f"\n== {config.name}: {config.description}", flush=True)
    # ONNX configurations run as the lean image does: torch cannot be imported.
    log_path = log_dir / f"{config.name}.log"
    with ServerProcess(env, log_path, without_torch=config.onnx, command=command) as server:
        print(f"   ready after {server.ready_s:.1f} s", flush=True)
        outputs = probe_outputs(server.base_url, examples)
        ladder = config.rates if args.ladders else []
        quiet = run_ladder(server, ladder, args, bodies, body_flops, peak, args.common_rate)
        quiet["saturated"] = run_saturation(server, args, bodies, body_flops, peak)
        contended = None
        if args.contention:
            with CpuHog() as hog:
                print(f"   -- again with a CPU hog on core {hog.core}", flush=True)
                rates = contended_rates(ladder)
                contended = run_ladder(server, rates, args, bodies, body_flops, peak, 0)
                contended["saturated"] = run_saturation(server, args, bodies, body_flops, peak)
                contended["hog_core"] = hog.core
                contended["hog_ran_throughout"] = hog.running()
        rss = server.peak_rss()
    result = {
        "name": config.name,
        "description": config.description,
        "env": config.env,
        "ready_s": server.ready_s,
        "loadavg_at_end": os.getloadavg(),
        "peak_rss_bytes": rss,
        **quiet,
        "server_errors_5xx": sum(
            n
            for s in quiet["steps"]
            for kind, n in s["errors_by_kind"].items()
            if kind.startswith("5")
        ),
        "already_borrowed": sum(s.get("already_borrowed", 0) for s in quiet["steps"]),
        "outputs": outputs,
    }
    if contended is not None:
        result["contended"] = contended
        result["retained_share"] = stats.retained_share(quiet, contended)
        result["retained_capacity"] = stats.retained_capacity(quiet, contended)
    return result


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="full-size checkpoint dir")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument(
        "--examples", default=None, help="examples.json (default: app/model/examples.json)"
    )
    p.add_argument("--configs", default="", help="comma-separated subset of configuration names")
    p.add_argument("--step-seconds", type=float, default=15.0, help="duration of each rate")
    p.add_argument("--slo", type=float, default=1.0, help="p95 latency bound in seconds")
    p.add_argument("--common-rate", type=float, default=3.0, help="rate every config runs")
    p.add_argument("--max-rate", type=float, default=0.0, help="skip rates above this (0: none)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--timeout", type=float, default=15.0, help="client timeout per request (s)")
    p.add_argument(
        "--contention",
        action="store_true",
        help="run each configuration again with a CPU hog pinned to one core",
    )
    p.add_argument(
        "--peer",
        action="store_true",
        help="add the ModelScope peer (builds .venv-peer on first use)",
    )
    p.add_argument(
        "--ladders",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the open-loop rate ladders (--no-ladders: only the probe and the saturated steps)",
    )
    p.add_argument(
        "--saturation-clients",
        type=int,
        default=4,
        help="closed-loop clients of the saturated step, quiet and contended (0: no such step)",
    )
    p.add_argument(
        "--saturation-seconds", type=float, default=30.0, help="duration of the saturated step"
    )
    p.add_argument(
        "--kernel-sweep",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure each backend's GFLOP/s by rows per call and threads (tuning)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configs = configurations(args.threads)
    if args.peer or "peer" in args.configs.split(","):
        configs.append(PEER)
    if args.configs:
        wanted = args.configs.split(",")
        unknown = set(wanted) - {c.name for c in configs}
        if unknown:
            sys.exit(f"unknown configuration(s): {', '.join(sorted(unknown))}")
        configs = [c for c in configs if c.name in wanted]
    started = time.perf_counter()
    examples = mix.load_examples(mix.find_examples(args.examples))
    bodies = mix.single_level_mix(examples)
    made = ensure_model(args.model, any(c.onnx for c in configs), args.examples)
    print("measuring the fp32 matmul peak ...", flush=True)
    machine = machine_info(args.threads)
    print(f"   {machine['matmul_peak_gflops']:.0f} GFLOP/s", flush=True)
    body_flops = flops.count_request_flops(str(args.model), bodies)
    results = {
        "model": str(args.model),
        "machine": machine,
        "prepared": made,
        "slo_p95_s": args.slo,
        "common_rate": args.common_rate,
        "step_seconds": args.step_seconds,
        "contention": args.contention,
        "mix_size": len(bodies),
        "flops_per_request_gflop": sum(body_flops) / len(body_flops) / 1e9,
        "flops_per_body_gflop": [f / 1e9 for f in body_flops],
        "configs": [],
    }
    if args.kernel_sweep:
        print("backend kernels by rows per call and threads ...", flush=True)
        kinds = list(dict.fromkeys(c.env["BACKEND"] for c in configs if not c.peer)) or ["torch"]
        threads = sorted({1, args.threads})
        results["kernels"] = kernels.sweep(
            str(args.model), kinds, rows_list=(1, 8), threads_list=threads
        )
    log_dir = args.out / "logs"
    reference = None  # outputs of the first fp32 torch configuration
    for config in configs:
        result = run_config(
            config, args, bodies, body_flops, examples, machine["matmul_peak_gflops"], log_dir
        )
        if reference is None and config.env.get("BACKEND") == "torch":
            reference = result["outputs"]
            result["agreement"] = {"summary": "reference"}
        elif reference is not None:
            result["agreement"] = agreement.compare(reference, result["outputs"])
        else:
            result["agreement"] = {"summary": "no fp32 torch configuration ran first"}
        results["configs"].append(result)
        report.write_all(results, args.out)  # partial results survive an interrupted run
    results["total_s"] = time.perf_counter() - started
    paths = report.write_all(results, args.out)
    print("\n" + report.markdown(results))
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
