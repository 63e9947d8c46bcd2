"""A real `prometheus` process (Debian's) for the live monitoring tests: loopback, 1 s scrapes and
rule evaluations, static targets labelled like the pods of a cluster."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import yaml

from tests.app.conftest import free_port

PROMETHEUS = shutil.which("prometheus")


class Prometheus:
    """A `prometheus` process on a free loopback port, 1 s scrapes and rule evaluations."""

    def __init__(self, directory: Path, targets: list[tuple[str, str, int]], rule_file: Path):
        """`targets`: (namespace, pod, port) of each server, labelled as the `kubernetes-pods`
        job labels a pod in a cluster."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        static = [
            {"targets": [f"127.0.0.1:{port}"], "labels": {"namespace": namespace, "pod": pod}}
            for namespace, pod, port in targets
        ]
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rule_file)],
            "scrape_configs": [{"job_name": "kubernetes-pods", "static_configs": static}],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self._log = open(directory / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.log_path = directory / "prometheus.log"

    def wait_ready(self, timeout: float = 60) -> Prometheus:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                if httpx.get(self.url + "/-/ready", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("prometheus not ready:\n" + self.log_path.read_text())

    def query(self, expr: str, at: float) -> list[dict]:
        answer = httpx.get(self.url + "/api/v1/query", params={"query": expr, "time": at}).json()
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    def wait_for(self, expr: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.query(expr, time.time()):
            assert time.monotonic() < deadline, f"no data for {expr}"
            time.sleep(0.5)

    def wait_scraped_after(self, moment: float, namespace: str, timeout: float = 30) -> None:
        """Until every target of `namespace` has been scraped by a scrape that started after
        `moment`."""
        expr = f'min(timestamp(up{{namespace="{namespace}"}}))'
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr, time.time())
            if result and float(result[0]["value"][1]) > moment:
                return
            assert time.monotonic() < deadline, f"no scrape of every target after {moment}"
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self._log.close()
