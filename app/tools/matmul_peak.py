"""The machine's fp32 matmul peak (torch), the yardstick of a measurement's machine: the benchmark
divides the model's GFLOP/s by it, and the capacity record keeps it to tell machines apart.

    python -m app.tools.matmul_peak --threads N    # prints {"gflops", "size", "threads"} as JSON

infra/capacity runs it as a command: deployment code never imports torch.
"""

from __future__ import annotations

import argparse
import json
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m app.tools.matmul_peak", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--sizes", default="1024,2048,3072", help="comma-separated matrix sizes")
    parser.add_argument("--seconds", type=float, default=1.0, help="per size")
    args = parser.parse_args(argv)
    sizes = tuple(int(n) for n in args.sizes.split(","))
    print(json.dumps(measure_matmul_peak(args.threads, sizes, args.seconds)))


if __name__ == "__main__":
    main()
