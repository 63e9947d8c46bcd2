"""`make up` / `make preview`: the README's deploy commands, run without and with a Pulumi CLI."""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _make(target: str, path: str, extra_env: dict[str, str] | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    env.update({"PATH": path, "MAKEFLAGS": "", **(extra_env or {})})
    return subprocess.run(
        ["make", "--no-print-directory", target, "STACK=dev"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _system_path_without_pulumi(tmp_path: Path) -> str:
    """A PATH with make and a shell but no `pulumi`, whatever the developer has installed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("make", "sh", "bash", "mkdir", "touch", "grep", "awk", "python3"):
        found = shutil.which(tool)
        assert found, f"{tool} is needed by the Makefile"
        (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


@pytest.mark.parametrize("target", ["up", "preview"])
def test_without_pulumi_cli_one_line_and_nonzero(tmp_path, target):
    result = _make(target, _system_path_without_pulumi(tmp_path))
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "pulumi CLI not found" in lines[0]
    assert "install" in lines[0]


def test_up_runs_pulumi_against_local_file_backend(tmp_path):
    path = _system_path_without_pulumi(tmp_path)
    log = tmp_path / "pulumi.log"
    fake = Path(path) / "pulumi"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)

    result = _make("up", path)

    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == [
        f"login file://{REPO}/.pulumi-state",
        "stack select --create --secrets-provider passphrase dev",
        "up --stack dev",
    ]


@pytest.mark.parametrize("target", ["up", "diff"])
def test_unknown_stack_is_refused(tmp_path, target):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    result = subprocess.run(
        ["make", "--no-print-directory", target, "STACK=nosuchstack"],
        cwd=REPO,
        env={**env, "MAKEFLAGS": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "no Pulumi.nosuchstack.yaml" in result.stderr


def _kind_env(tmp_path: Path) -> tuple[str, dict[str, str], Path]:
    """A PATH whose docker, kind and kubectl are tests/infra/kind_fakes.py."""
    path = _system_path_without_pulumi(tmp_path)
    for tool in ("sed", "cat", "dirname", "printf", "env"):
        if (found := shutil.which(tool)) and not (Path(path) / tool).exists():
            (Path(path) / tool).symlink_to(found)
    fake = tmp_path / "kind_fakes.py"
    fake.write_text(f"#!{sys.executable}\n" + (REPO / "tests/infra/kind_fakes.py").read_text())
    fake.chmod(0o755)
    for tool in ("docker", "kind", "kubectl"):
        (Path(path) / tool).symlink_to(fake)
    log = tmp_path / "calls.log"
    env = {"FAKE_STATE": str(tmp_path / "state.json"), "FAKE_LOG": str(log)}
    return path, env, log


def _calls(log: Path, since: int = 0) -> list[str]:
    return log.read_text().splitlines()[since:] if log.exists() else []


# Calls that change something; everything else only looks.
CHANGING = (
    "docker run",
    "docker start",
    "docker rm",
    "docker network connect",
    "kind create",
    "kind delete",
    "kubectl --context kind-uninlu apply",
    "docker buildx create",
    "docker buildx rm",
)


def _changes(calls: list[str]) -> list[str]:
    return [c for c in calls if c.startswith(CHANGING) or " mkdir " in c or " cp /dev/stdin " in c]


def test_diff_runs_the_review_for_the_stack_and_base():
    """`make diff STACK=prod BASE=<ref>`: the command it runs (make -n prints, runs nothing)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "diff", "STACK=prod", "BASE=origin/main"],
        cwd=REPO,
        env={**env, "MAKEFLAGS": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert ".venv/bin/python -m infra.review --stack prod --base 'origin/main'" in result.stdout
    default = subprocess.run(
        ["make", "--no-print-directory", "-n", "diff", "STACK=dev"],
        cwd=REPO,
        env={**env, "MAKEFLAGS": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ".venv/bin/python -m infra.review --stack dev \n" in default.stdout + "\n"


def test_kind_up_builds_the_laptop_cluster_once_and_a_second_run_changes_nothing(tmp_path):
    path, env, log = _kind_env(tmp_path)

    first = _make("kind-up", path, env)

    assert first.returncode == 0, first.stdout + first.stderr
    assert _changes(_calls(log)) == [
        "docker run -d --restart=always -p 127.0.0.1:5001:5000 --network bridge "
        "--name kind-registry registry:2",
        f"kind create cluster --name uninlu --config {REPO}/infra/kind/cluster.yaml --wait 120s",
        "docker exec uninlu-control-plane mkdir -p /etc/containerd/certs.d/localhost:5001",
        "docker exec -i uninlu-control-plane cp /dev/stdin "
        "/etc/containerd/certs.d/localhost:5001/hosts.toml",
        "docker network connect kind kind-registry",
        "kubectl --context kind-uninlu apply -f -",
        "docker buildx create --name uninlu-kind --driver docker-container "
        "--driver-opt network=host",
    ]
    state = json.loads((tmp_path / "state.json").read_text())
    assert 'config_path = "/etc/containerd/certs.d"' in state["cluster_config"]
    assert state["files"] == {
        "/etc/containerd/certs.d/localhost:5001/hosts.toml": '[host."http://kind-registry:5000"]'
    }
    hosting = yaml.safe_load(state["applied"])
    assert (hosting["metadata"]["name"], hosting["metadata"]["namespace"]) == (
        "local-registry-hosting",
        "kube-public",
    )
    assert yaml.safe_load(hosting["data"]["localRegistryHosting.v1"])["host"] == "localhost:5001"
    assert state["builders"] == {
        "uninlu-kind": {"driver": "docker-container", "opt": "network=host"}
    }
    # The dev stack builds with exactly this builder.
    dev = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())["config"]
    assert dev["uninlu:image"]["builder"] == "uninlu-kind"
    assert dev["uninlu:image"]["registry"] == "localhost:5001"
    assert dev["kubernetes:context"] == "kind-uninlu"

    before = len(_calls(log))
    second = _make("kind-up", path, env)

    assert second.returncode == 0, second.stdout + second.stderr
    assert _calls(log, before), "the second run looked at nothing"
    assert _changes(_calls(log, before)) == []
    assert json.loads((tmp_path / "state.json").read_text()) == state


def test_kind_up_restarts_a_stopped_registry(tmp_path):
    path, env, log = _kind_env(tmp_path)
    assert _make("kind-up", path, env).returncode == 0
    state_file = tmp_path / "state.json"
    state = json.loads(state_file.read_text())
    state["containers"]["kind-registry"]["running"] = False  # e.g. after a laptop reboot
    state_file.write_text(json.dumps(state))
    before = len(_calls(log))

    assert _make("kind-up", path, env).returncode == 0
    assert _changes(_calls(log, before)) == ["docker start kind-registry"]


def test_kind_down_removes_everything_and_is_idempotent(tmp_path):
    path, env, log = _kind_env(tmp_path)
    assert _make("kind-up", path, env).returncode == 0
    before = len(_calls(log))

    down = _make("kind-down", path, env)

    assert down.returncode == 0, down.stderr
    assert _changes(_calls(log, before)) == [
        "kind delete cluster --name uninlu",
        "docker rm -f kind-registry",
        "docker buildx rm uninlu-kind",
    ]
    state = json.loads((tmp_path / "state.json").read_text())
    assert (state["clusters"], state["containers"], state["builders"]) == ([], {}, {})
    before = len(_calls(log))
    assert _make("kind-down", path, env).returncode == 0
    assert _changes(_calls(log, before)) == []


def test_kind_up_without_docker_says_what_to_install(tmp_path):
    result = _make("kind-up", _system_path_without_pulumi(tmp_path))
    assert result.returncode != 0
    assert "docker not found" in result.stderr
