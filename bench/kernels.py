"""Thread and batch-size tuning at the backend level: model GFLOP/s of each backend kind for a
batch of typical requests (encode + score of rows like the mix's), by rows per call and threads.

The server's throughput follows from these figures: batching only helps as far as a backend gets
faster per row with more rows, and threads only as far as the kernels scale."""

from __future__ import annotations

import time

import numpy as np


def _batch(rows: int, text_len: int, prompt_len: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    windows = [[2, *rng.integers(100, 20000, size=text_len - 2).tolist(), 3] for _ in range(rows)]
    prompt = [2, *rng.integers(100, 20000, size=prompt_len - 2).tolist(), 3]
    return windows, prompt


def _run(backend, windows, prompt):
    from app.model.pipeline import PromptRow

    states = backend.encode(windows)
    backend.score([PromptRow(s, prompt, len(w)) for s, w in zip(states, windows, strict=True)])


def sweep(
    model_path: str,
    kinds: list[str],
    rows_list=(1, 4, 16),
    threads_list=(2,),
    text_len: int = 64,
    prompt_len: int = 8,
    repeats: int = 2,
) -> list[dict]:
    """Best-of-`repeats` GFLOP/s per (kind, threads, rows). FLOPs are counted once per shape on
    the fp32 torch backend with FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from app.runtime.torch_backend import load_backend

    reference, _ = load_backend(model_path, device="cpu", kind="torch")
    flops = {}
    for rows in rows_list:
        counter = FlopCounterMode(display=False)
        with counter:
            _run(reference, *_batch(rows, text_len, prompt_len))
        flops[rows] = counter.get_total_flops()
    del reference
    results = []
    for kind in kinds:
        for threads in threads_list:
            torch.set_num_threads(threads)
            backend, _ = load_backend(model_path, device="cpu", threads=threads, kind=kind)
            _run(backend, *_batch(1, text_len, prompt_len))  # warm up
            for rows in rows_list:
                batch = _batch(rows, text_len, prompt_len)
                best = float("inf")
                for _ in range(repeats):
                    start = time.perf_counter()
                    _run(backend, *batch)
                    best = min(best, time.perf_counter() - start)
                results.append(
                    {
                        "kind": kind,
                        "threads": threads,
                        "rows": rows,
                        "seconds": best,
                        "gflops": flops[rows] / best / 1e9,
                        "rows_per_s": rows / best,
                    }
                )
                print(
                    f"   {kind:<10} threads {threads} rows {rows:>3}: {best * 1000:7.0f} ms, "
                    f"{flops[rows] / best / 1e9:6.0f} GFLOP/s",
                    flush=True,
                )
            del backend
    return results
