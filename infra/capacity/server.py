"""Run the real model server (`python -m app`) as a child process: its start-up-to-ready time and
peak RSS. The planner's capacity measurement drives it, and so does the benchmark (bench/server.py
adds the counters it scrapes from /metrics); it runs the server as a command, never imports it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

# `python -m app` with torch made unimportable: what the lean ONNX image runs. Without this, the
# installed torch is imported anyway (transformers loads it when present) and inflates the RSS.
WITHOUT_TORCH = (
    "import runpy, sys; sys.modules['torch'] = None; "
    "runpy.run_module('app', run_name='__main__', alter_sys=True)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RssSampler(threading.Thread):
    """Polls the resident set size of a process tree; keeps the peak (a pod's memory limit must
    cover the peak, not the average)."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(self.pid)
                total = proc.memory_info().rss
                for child in proc.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        total += child.memory_info().rss
                self.peak = max(self.peak, total)
            self._stop_event.wait(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join(timeout=2)
        return self.peak


class ServerProcess:
    """The server under test. `env` holds its settings (MODEL_PATH, BACKEND, ...)."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        ready_timeout: float = 300.0,
        without_torch: bool = False,
        command: list[str] | None = None,
    ):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "PORT": str(self.port), "HOST": "127.0.0.1"}
        self.log_path = log_path
        self.ready_timeout = ready_timeout
        if command:  # another server (the peer): {host} and {port} are filled in
            self.command = [c.format(host="127.0.0.1", port=self.port) for c in command]
        else:
            self.command = [sys.executable] + (
                ["-c", WITHOUT_TORCH] if without_torch else ["-m", "app"]
            )
        self.proc: subprocess.Popen | None = None
        self.sampler: RssSampler | None = None
        self.ready_s: float | None = None

    def __enter__(self) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        start = time.perf_counter()
        self.proc = subprocess.Popen(
            self.command, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.sampler = RssSampler(self.proc.pid)
        self.sampler.start()
        try:
            self._wait_ready(start)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self, start: float) -> None:
        deadline = start + self.ready_timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode} before ready; log: {self.log_path}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base_url + "/ready", timeout=2).status_code == 200:
                    self.ready_s = time.perf_counter() - start
                    return
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {self.ready_timeout} s; log: {self.log_path}")

    def peak_rss(self) -> int:
        return self.sampler.peak if self.sampler else 0

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.sampler:
            self.sampler.stop()
        self._log.close()
