"""Pulumi entry point: deploy the stack and export its outputs (see infra/program.py)."""

import pulumi

from infra.program import deploy

for key, value in deploy().items():
    pulumi.export(key, value)
