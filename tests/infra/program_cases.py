"""What the Pulumi program tests share: the stacks they run (with the prod stack's secrets), the
stack files as written, and the Helm release the program registers, rendered by the real Helm
engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pulumi_harness import REPO, prod_secrets

from infra.chart_render import render_chart

RELEASE = "kubernetes:helm.sh/v3:Release"
IMAGE = "docker-build:index:Image"
STACKS = {"dev": {}, "prod": {"secrets": prod_secrets()}}


def stack_yaml(stack: str, path: Path | None = None) -> dict[str, Any]:
    """The stack file as written (the tests compare against it, not against the program)."""
    document = yaml.safe_load((path or REPO / f"Pulumi.{stack}.yaml").read_text())
    return {key.removeprefix("uninlu:"): value for key, value in document["config"].items()}


def release_inputs(res, name: str = "uninlu") -> dict[str, Any]:
    return res.run.one(RELEASE, name).plain_inputs


def rendered(res) -> list[dict]:
    inputs = release_inputs(res)
    return render_chart(inputs["values"], name=inputs["name"], namespace=inputs["namespace"])
