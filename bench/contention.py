"""A CPU hog for `python -m bench --contention`: one busy process pinned to one core (what
`taskset -c N` does, through sched_setaffinity), as a noisy neighbour or a CFS-throttled pod
would take a core from the server. Bounded: the hog ends itself after `max_seconds` even if the
bench dies without stopping it."""

from __future__ import annotations

import os
import subprocess
import sys

# The child pins itself, then spins until its deadline.
_HOG = (
    "import os, sys, time\n"
    "os.sched_setaffinity(0, {int(sys.argv[1])})\n"
    "deadline = time.monotonic() + float(sys.argv[2])\n"
    "while time.monotonic() < deadline:\n"
    "    pass\n"
)


def hog_core() -> int:
    """The core to take: the last one this process may run on."""
    return max(os.sched_getaffinity(0))


class CpuHog:
    """`with CpuHog(core):` one core is kept busy for the block (at most `max_seconds`)."""

    def __init__(self, core: int | None = None, max_seconds: float = 1800.0):
        self.core = hog_core() if core is None else core
        if self.core not in os.sched_getaffinity(0):
            raise ValueError(f"core {self.core} is not available to this process")
        self.max_seconds = max_seconds
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> CpuHog:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOG, str(self.core), str(self.max_seconds)]
        )
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
