"""Run the real model server (`python -m app`) as a child process: start-up-to-ready time, peak RSS,
and the batch-size histogram scraped from its /metrics."""

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
from prometheus_client.parser import text_string_to_metric_families

BATCH_SIZE_METRIC = "uninlu_batch_size"
# Tokens in backend calls by stage (encode | score) and kind (real | padded), from
# app/serving/batching.py.
TOKENS_METRIC = "uninlu_backend_tokens_total"
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

    def counters(self) -> dict:
        """The bench's counters from one /metrics scrape (parse_counters); empty figures when
        the server exports none (the peer has no /metrics)."""
        try:
            response = httpx.get(self.base_url + "/metrics", timeout=10)
        except httpx.HTTPError:
            return parse_counters("")
        return parse_counters(response.text if response.status_code == 200 else "")

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


def parse_counters(text: str) -> dict:
    """From Prometheus text: `batch` = (sum, count) of the batch-size histogram, whose deltas
    give a step's mean batch size, and `tokens` = {(stage, kind): count} of backend tokens, whose
    deltas give the padded share."""
    total = count = 0.0
    tokens: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == BATCH_SIZE_METRIC + "_sum":
                total += sample.value
            elif sample.name == BATCH_SIZE_METRIC + "_count":
                count += sample.value
            elif sample.name == TOKENS_METRIC:
                key = (sample.labels.get("stage", ""), sample.labels.get("kind", ""))
                tokens[key] = tokens.get(key, 0.0) + sample.value
    return {"batch": (total, count), "tokens": tokens}


def padded_share(before: dict, after: dict) -> dict[str, float | None]:
    """Share of padded tokens in backend calls between two scrapes, per stage and overall
    (`all`); None where no token was counted (or the server does not export the counter)."""
    delta = {k: v - before["tokens"].get(k, 0.0) for k, v in after["tokens"].items()}
    shares: dict[str, float | None] = {}
    for stage in sorted({s for s, _ in delta} | {"all"}):
        padded = sum(v for (s, k), v in delta.items() if k == "padded" and stage in (s, "all"))
        real = sum(v for (s, k), v in delta.items() if k == "real" and stage in (s, "all"))
        shares[stage] = padded / (padded + real) if padded + real > 0 else None
    return shares
