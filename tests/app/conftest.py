"""Real servers for the HTTP tests: `python -m app` subprocesses on free loopback ports, each with
the session's tiny checkpoint, started once and shared where the test does not need its own."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.model.examples import load_examples

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"

# Small limits so every refusal is cheap to trigger; TORCH_THREADS=1 leaves a core for the test.
BASE_ENV = {
    "LOG_FORMAT": "json",
    "LOG_LEVEL": "INFO",
    "TORCH_THREADS": "1",
    "DEVICE": "cpu",
    "MAX_TEXT_CHARS": "400",
    "MAX_SCHEMA_NODES": "12",
    "MAX_SCHEMA_DEPTH": "3",
    "MAX_BODY_BYTES": "20000",
    "MAX_BATCH_ITEMS": "8",
    "MAX_PROMPT_ROWS": "300",
    "MAX_QUEUE": "128",
    "BATCH_WAIT_MS": "20",
    "GRACEFUL_SHUTDOWN_SECONDS": "20",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """One `python -m app` child process; `statuses_before_ready` records what /ready said while
    the model loaded."""

    def __init__(self, model_dir: Path, log_path: Path, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {
            **os.environ,
            **BASE_ENV,
            "MODEL_PATH": str(model_dir),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            **env,
        }
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app"],
            cwd=REPO,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.statuses_before_ready: list[tuple[int, int]] = []  # (/health, /ready)
        self.predict_before_ready: tuple[int, str] | None = None  # (status, error code)

    def wait_ready(self, timeout: float = 120) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                health = httpx.get(self.url + "/health", timeout=5).status_code
                ready = httpx.get(self.url + "/ready", timeout=5).status_code
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            if ready == 200:
                return self
            self.statuses_before_ready.append((health, ready))
            if self.predict_before_ready is None:
                early = httpx.post(
                    self.url + "/predict", json={"text": "早", "schema": {"a": None}}
                )
                if early.status_code != 200:  # not ready between the two calls: loaded now
                    self.predict_before_ready = (early.status_code, early.json()["error"]["code"])
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_records(self) -> list[dict]:
        records = []
        for line in self.logs().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        """/metrics parsed by prometheus_client: {(sample name, labels): value}."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        values = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return values

    @staticmethod
    def value(metrics: dict, name: str, **labels: str) -> float:
        return metrics.get((name, frozenset(labels.items())), 0.0)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def start_server(tiny_model_dir, tmp_path_factory):
    """Factory: start a server with extra environment settings; all are stopped at the end."""
    started: list[ServerProcess] = []

    def start(wait: bool = True, **env: str) -> ServerProcess:
        log_path = tmp_path_factory.mktemp("server") / "server.log"
        server = ServerProcess(Path(tiny_model_dir), log_path, **env)
        started.append(server)
        return server.wait_ready() if wait else server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(start_server) -> ServerProcess:
    """The shared server of the API, fuzz and web page tests."""
    return start_server()


@pytest.fixture(scope="session")
def examples() -> list[dict]:
    return load_examples()
