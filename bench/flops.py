"""Model FLOPs per request and the machine's matmul peak, for a FLOP-utilisation figure.

Model FLOPs are counted, not estimated: each body of the mix runs once, alone, through the fp32
torch backend under torch's FlopCounterMode (matmuls and attention, the work that matters). Padding
added by batching is therefore not counted: utilisation measures useful work against the peak.
"""

from __future__ import annotations

import time

import torch


def measure_matmul_peak(threads: int, sizes=(1024, 2048, 3072), seconds: float = 1.0) -> dict:
    """Best fp32 GFLOP/s of torch.matmul on square matrices with `threads` threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    best = {"gflops": 0.0, "size": 0}
    try:
        for n in sizes:
            a, b = torch.randn(n, n), torch.randn(n, n)
            torch.matmul(a, b)  # warm up (allocations, thread pool)
            for _ in range(2):
                runs, start = 0, time.perf_counter()
                while (elapsed := time.perf_counter() - start) < seconds / 2 or runs == 0:
                    torch.matmul(a, b)
                    runs += 1
                gflops = 2 * n**3 * runs / elapsed / 1e9
                if gflops > best["gflops"]:
                    best = {"gflops": gflops, "size": n}
    finally:
        torch.set_num_threads(previous)
    return {**best, "threads": threads}


def count_request_flops(model_path: str, bodies: list[dict]) -> list[float]:
    """FLOPs of each body, run alone through the fp32 torch backend (one model call per step)."""
    from torch.utils.flop_counter import FlopCounterMode

    from app.model.pipeline import Extraction, run_steps
    from app.runtime.torch_backend import load_backend

    backend, tokenizer = load_backend(model_path, device="cpu", kind="torch")
    counts = []
    for body in bodies:
        counter = FlopCounterMode(display=False)
        with counter:
            run_steps(backend, Extraction(tokenizer, body["text"], body["schema"]))
        counts.append(float(counter.get_total_flops()))
    return counts
