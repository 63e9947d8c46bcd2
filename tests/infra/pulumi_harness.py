"""Run the Pulumi program under mocks with a stack's YAML config, recording what it registers.

There is no supported loader for stack files without the CLI, so this one does what the CLI does:
prefix project keys, JSON-encode non-strings, and turn `secure:` values into secrets (with a
stand-in value, since they cannot be decrypted here).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor

REPO = Path(__file__).resolve().parents[2]
PROJECT = "uninlu"
SECURE_STAND_IN = "stand-in-for-an-encrypted-value"
# A registry password the tests pass as a secret; it must never show up in plain text.
TEST_PASSWORD = "hunter2-registry-token-5f3a"


def encode(value: Any) -> str:
    """How the CLI hands config to a program: strings as-is, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def full_key(key: str) -> str:
    return key if ":" in key else f"{PROJECT}:{key}"


def load_stack_yaml(path: Path) -> tuple[dict[str, str], list[str]]:
    """The config map and secret keys the CLI would pass for this stack file."""
    document = yaml.safe_load(path.read_text()) or {}
    config: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in (document.get("config") or {}).items():
        name = full_key(key)
        if isinstance(value, dict) and set(value) == {"secure"}:
            config[name] = SECURE_STAND_IN
            secret_keys.append(name)
        else:
            config[name] = encode(value)
    return config, secret_keys


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig


def unwrap(value: Any) -> Any:
    """Inputs with the secret wrappers removed (for asserting on values, not on secrecy)."""
    if is_secret(value):
        return unwrap(value["value"])
    if isinstance(value, dict):
        return {key: unwrap(item) for key, item in value.items()}
    if isinstance(value, list):
        return [unwrap(item) for item in value]
    return value


def plain_occurrences(value: Any, needle: str, path: str = "") -> list[str]:
    """Paths where `needle` appears outside any secret wrapper."""
    if is_secret(value):
        return []
    if isinstance(value, dict):
        return [
            hit
            for key, item in value.items()
            for hit in plain_occurrences(item, needle, f"{path}.{key}")
        ]
    if isinstance(value, list):
        return [
            hit
            for index, item in enumerate(value)
            for hit in plain_occurrences(item, needle, f"{path}[{index}]")
        ]
    return [path or "."] if isinstance(value, str) and needle in value else []


def integral(value: Any) -> Any:
    """Mocks see every number as a float; turn 2.0 back into 2 where it was an integer."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [integral(item) for item in value]
    return value


@dataclass
class Registered:
    type: str
    name: str
    inputs: dict[str, Any]
    urn: str = ""
    parent: str = ""
    dependencies: list[str] = field(default_factory=list)

    @property
    def plain_inputs(self) -> dict[str, Any]:
        return integral(unwrap(self.inputs))


class Recorder(pulumi.runtime.Mocks):
    """Echoes inputs as outputs; a build's digest is a hash of its inputs, like a real rebuild."""

    def __init__(self) -> None:
        self.inputs: dict[tuple[str, str], dict[str, Any]] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.inputs[(args.typ, args.name)] = args.inputs
        outputs = dict(args.inputs)
        if args.typ == "docker-build:index:Image":
            canonical = json.dumps(unwrap(args.inputs), sort_keys=True, default=str)
            digest = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
            outputs["digest"] = digest
            outputs["ref"] = f"{args.inputs['tags'][0]}@{digest}"
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return {}


class RecordingMonitor(MockMonitor):
    """Also records each registration's parent and dependencies (the order the engine enforces)."""

    def __init__(self, mocks: Recorder) -> None:
        super().__init__(mocks)
        self.registered: list[Registered] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.registered.append(
                Registered(
                    type=request.type,
                    name=request.name,
                    inputs=self.mocks.inputs[(request.type, request.name)],
                    urn=response.urn,
                    parent=request.parent,
                    dependencies=list(request.dependencies),
                )
            )
        return response


@dataclass
class Run:
    stack: str
    monitor: RecordingMonitor

    @property
    def resources(self) -> list[Registered]:
        return list(self.monitor.registered)

    def of_type(self, type_: str) -> list[Registered]:
        return [res for res in self.resources if res.type == type_]

    def one(self, type_: str, name: str | None = None) -> Registered:
        found = [res for res in self.of_type(type_) if name is None or res.name == name]
        assert len(found) == 1, f"expected one {type_} {name or ''}, got {[r.name for r in found]}"
        return found[0]

    def by_urn(self, urn: str) -> Registered:
        return next(res for res in self.resources if res.urn == urn)


def start(
    stack: str,
    *,
    stack_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    remove: tuple[str, ...] = (),
    secrets: dict[str, str] | None = None,
) -> Run:
    """Install mocks and the stack's config. `overrides` replace whole keys; `secrets` are set the
    way `pulumi config set --secret` would. Call the program after this, inside a
    @pulumi.runtime.test function."""
    config, secret_keys = load_stack_yaml(stack_file or REPO / f"Pulumi.{stack}.yaml")
    for key, value in (overrides or {}).items():
        config[full_key(key)] = encode(value)
    for key in remove:
        config.pop(full_key(key), None)
    for key, value in (secrets or {}).items():
        config[full_key(key)] = value
        secret_keys.append(full_key(key))
    recorder = Recorder()
    monitor = RecordingMonitor(recorder)
    pulumi.runtime.set_mocks(recorder, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(config, secret_keys)
    return Run(stack=stack, monitor=monitor)


def prod_secrets() -> dict[str, str]:
    """What an operator sets once for prod (the password is not in the committed stack file)."""
    return {"registryPassword": TEST_PASSWORD}


@dataclass
class Result:
    """A finished program run: what was registered and the resolved stack outputs."""

    run: Run
    outputs: dict[str, Any]


def run_program(program: Any, stack: str, **start_kwargs: Any) -> Result:
    """Run `program()` (returning its outputs dict) under mocks until every registration is done.

    The inner test function returns the Output it waits on, so nothing is skipped silently; an
    exception in the program or in an apply propagates out of this call.
    """
    captured: dict[str, Any] = {}

    @pulumi.runtime.test
    def _run() -> pulumi.Output:
        captured["run"] = start(stack, **start_kwargs)
        outputs = program()
        return pulumi.Output.all(**outputs).apply(lambda resolved: captured.update(out=resolved))

    _run()
    return Result(run=captured["run"], outputs=captured["out"])
