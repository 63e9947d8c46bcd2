"""The machine a measurement ran on, kept with its figures (the capacity record, the benchmark's
results): CPUs, CPU model and vector units, Python, load average, and the fp32 matmul peak.

The peak is measured by `python -m app.tools.matmul_peak` in a child process: it needs torch,
which deployment code never imports.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent


def matmul_peak(threads: int) -> dict:
    """{"gflops", "size", "threads"}: the best fp32 torch.matmul rate with `threads` threads."""
    done = subprocess.run(
        [sys.executable, "-m", "app.tools.matmul_peak", "--threads", str(threads)],
        check=True,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine_info(threads: int) -> dict:
    flags = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        text = cpuinfo.read_text()
        model = next(
            (ln.split(":", 1)[1].strip() for ln in text.splitlines() if "model name" in ln), ""
        )
        flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    else:
        model = platform.processor()
    peak = matmul_peak(threads)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "avx2": " avx2" in flags,
        "avx512": " avx512f" in flags,
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
        "matmul_peak_gflops": peak["gflops"],
        "matmul_peak_size": peak["size"],
        "matmul_peak_threads": threads,
    }
