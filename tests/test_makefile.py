"""`make up` / `make preview`: the README's deploy commands, run without and with a Pulumi CLI."""

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

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


def test_unknown_stack_is_refused(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    result = subprocess.run(
        ["make", "--no-print-directory", "up", "STACK=nosuchstack"],
        cwd=REPO,
        env={**env, "MAKEFLAGS": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "no Pulumi.nosuchstack.yaml" in result.stderr
