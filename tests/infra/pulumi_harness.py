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

import grpc
import pulumi
import yaml
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor

from infra.review.buildcontext import context_hash
from infra.review.probe import is_secret, stack_file_config

REPO = Path(__file__).resolve().parents[2]
PROJECT = "uninlu"
SECURE_STAND_IN = "stand-in-for-an-encrypted-value"
# A registry password the tests pass as a secret; it must never show up in plain text.
TEST_PASSWORD = "hunter2-registry-token-5f3a"
# How a preview prints a value that is only known after the update (`output<string>`).
COMPUTED = "<computed>"


def encode(value: Any) -> str:
    """How the CLI hands config to a program: strings as-is, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def full_key(key: str) -> str:
    return key if ":" in key else f"{PROJECT}:{key}"


def load_stack_yaml(path: Path) -> tuple[dict[str, str], list[str]]:
    """The config map and secret keys the CLI would pass for this stack file."""
    return stack_file_config(PROJECT, path, SECURE_STAND_IN)


def _unknown(value: Any) -> bool:
    """An input the engine does not know yet: the wire sentinel, or the SDK's Unknown."""
    if is_secret(value):
        return _unknown(value["value"])
    return isinstance(value, pulumi.output.Unknown) or (
        isinstance(value, str) and value == rpc.UNKNOWN
    )


def unwrap(value: Any) -> Any:
    """Inputs with the secret wrappers removed (for asserting on values, not on secrecy); an
    unknown value (a preview's computed input) becomes COMPUTED."""
    if _unknown(value):
        return COMPUTED
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


GET_REGISTRY_IMAGE = "docker:index/getRegistryImage:getRegistryImage"


class ProviderError(grpc.RpcError):
    """An error a provider returns over gRPC (what the SDK reports as the invoke's failure, not as
    a crash of the program's own RPCs)."""

    def __init__(self, details: str) -> None:
        super().__init__(details)
        self._details = details

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNKNOWN

    def details(self) -> str:
        return self._details


class Recorder(pulumi.runtime.Mocks):
    """Echoes inputs as outputs; a build's digest is a hash of its inputs, like a real rebuild.

    `registry` is what the registry holds ({"host/repo:tag": "sha256:..."}), for pulumi-docker's
    getRegistryImage; a tag it lacks fails as the provider's data source does
    (kreuzwerker/terraform-provider-docker, data_source_docker_registry_image.go)."""

    def __init__(self, registry: dict[str, str] | None = None) -> None:
        self.inputs: dict[tuple[str, str], dict[str, Any]] = {}
        self.registry = dict(registry or {})
        self.invokes: list[tuple[str, dict[str, Any]]] = []

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
        self.invokes.append((args.token, args.args))
        if args.token == GET_REGISTRY_IMAGE:
            name = args.args["name"]
            if name not in self.registry:
                repository, tag = name.rsplit(":", 1)
                raise ProviderError(
                    f"Got error when attempting to fetch image version {repository}:{tag} from "
                    "registry: Error during registry request: 404 manifest unknown"
                )
            return {"id": name, "name": name, "sha256Digest": self.registry[name]}
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
    registry: dict[str, str] | None = None,
) -> Run:
    """Install mocks and the stack's config. `overrides` replace whole keys; `secrets` are set the
    way `pulumi config set --secret` would; `registry` is what the registry holds. Call the
    program after this, inside a @pulumi.runtime.test function."""
    config, secret_keys = load_stack_yaml(stack_file or REPO / f"Pulumi.{stack}.yaml")
    for key, value in (overrides or {}).items():
        config[full_key(key)] = encode(value)
    for key in remove:
        config.pop(full_key(key), None)
    for key, value in (secrets or {}).items():
        config[full_key(key)] = value
        secret_keys.append(full_key(key))
    recorder = Recorder(registry)
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


# ------------------------------------------------------------------ lifecycle across runs
#
# The engine keeps each resource's last inputs and outputs in the stack's checkpoint. On the next
# run it asks the provider for a diff against them: no diff is a "same" step (the provider is not
# called; the old outputs flow on), a diff is an update, which a preview asks the provider to
# simulate (DryRun) instead of performing. The models below follow the providers' own sources.

IMAGE_TYPE = "docker-build:index:Image"
RELEASE_TYPE = "kubernetes:helm.sh/v3:Release"


def flatten(value: Any, path: str = "") -> dict[str, Any]:
    """{"a": {"b": [1]}} -> {"a.b[0]": 1}; unknown values become COMPUTED."""
    if _unknown(value):
        return {path: COMPUTED}
    if is_secret(value):
        return flatten(value["value"], path)
    if isinstance(value, dict) and value:
        return {
            k: v
            for key, item in value.items()
            for k, v in flatten(item, f"{path}.{key}" if path else key).items()
        }
    if isinstance(value, list) and value:
        return {
            k: v
            for index, item in enumerate(value)
            for k, v in flatten(item, f"{path}[{index}]").items()
        }
    return {path: integral(value)}


@dataclass
class Saved:
    """One resource in the checkpoint: the inputs the provider diffed and the outputs it gave."""

    inputs: dict[str, Any]
    outputs: dict[str, Any]


@dataclass
class Step:
    """One line of a preview or update: op is create, update, same or delete; `changes` maps each
    changed input (flattened path) to (old, new), new being COMPUTED where it is not known yet."""

    type: str
    name: str
    op: str
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)


class EngineMocks(Recorder):
    """Mocks that behave like the engine plus the real providers on one run of a live stack."""

    def __init__(self, checkpoint: dict[tuple[str, str], Saved], dry_run: bool, root: Path):
        super().__init__()
        self.checkpoint = checkpoint
        self.dry_run = dry_run
        self.root = root
        self.steps: list[Step] = []

    def checked_inputs(self, typ: str, inputs: dict[str, Any]) -> dict[str, Any]:
        """The inputs as the provider's Check/Diff sees them."""
        checked = dict(inputs)
        if typ == IMAGE_TYPE:
            # Diff compares the context hash as well as the inputs (image.go, Diff).
            context = unwrap(inputs["context"])
            dockerfile = unwrap(inputs.get("dockerfile") or {}).get("location", "Dockerfile")
            named = {k: v["location"] for k, v in (context.get("named") or {}).items()}
            checked["contextHash"] = context_hash(self.root, context["location"], dockerfile, named)
        if typ == RELEASE_TYPE and "version" not in inputs:
            # A local chart's version comes from its Chart.yaml (helm_release.go, Check).
            chart_yaml = self.root / inputs["chart"] / "Chart.yaml"
            if chart_yaml.is_file():
                checked["version"] = yaml.safe_load(chart_yaml.read_text())["version"]
        return checked

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.inputs[(args.typ, args.name)] = args.inputs
        if not args.custom:  # components have no provider and no state of their own
            return f"{args.name}-id", dict(args.inputs)
        key = (args.typ, args.name)
        checked = self.checked_inputs(args.typ, args.inputs)
        old = self.checkpoint.get(key)
        if old is None:
            step = Step(args.typ, args.name, "create")
        else:
            before, after = flatten(old.inputs), flatten(checked)
            changes = {
                path: (before.get(path), after.get(path))
                for path in sorted(before.keys() | after.keys())
                if before.get(path) != after.get(path) or after.get(path) == COMPUTED
            }
            step = Step(args.typ, args.name, "update" if changes else "same", changes)
        self.steps.append(step)
        if step.op == "same":
            # The engine does not call the provider: the checkpoint's outputs flow on unchanged.
            return f"{args.name}-id", old.outputs
        outputs = self.provider_outputs(args.typ, args.inputs, checked, step.op)
        if not self.dry_run:
            self.checkpoint[key] = Saved(inputs=checked, outputs=outputs)
        return f"{args.name}-id", outputs

    def provider_outputs(
        self, typ: str, inputs: dict[str, Any], checked: dict[str, Any], op: str
    ) -> dict[str, Any]:
        outputs = dict(inputs)
        if typ != IMAGE_TYPE:
            return outputs
        outputs["contextHash"] = checked["contextHash"]
        tag = unwrap(inputs["tags"])[0]
        if self.dry_run and not unwrap(inputs.get("buildOnPreview", True)):
            if op == "create":
                # pulumi-go-provider infer/resource.go (markComputed): on a create preview every
                # output that does not mirror an input is unknown.
                outputs["digest"] = rpc.UNKNOWN
                outputs["ref"] = rpc.UNKNOWN
            else:
                # image.go, Create on a DryRun without buildOnPreview returns before building:
                # the state has no digest (a known "") and the first tag as its ref; Update calls
                # Create, and infer marks nothing unknown on an update.
                outputs["digest"] = ""
                outputs["ref"] = tag
            return outputs
        # A real build: the digest follows the inputs and the context, as a rebuild's would.
        canonical = json.dumps(unwrap(checked), sort_keys=True, default=str)
        digest = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
        outputs["digest"] = digest
        outputs["ref"] = f"{tag}@{digest}"
        return outputs


@dataclass
class Outcome:
    """One preview or up: its steps, what the program registered, the stack outputs (unknown ones
    as COMPUTED)."""

    steps: list[Step]
    run: Run
    outputs: dict[str, Any]

    def changed(self) -> dict[str, dict[str, tuple[Any, Any]]]:
        """{"<op> <type> <name>": {input: (old, new)}} for every step that is not a `same`."""
        return {
            f"{step.op} {step.type} {step.name}": step.changes
            for step in self.steps
            if step.op != "same"
        }

    def report(self) -> str:
        """The changes as `pulumi preview --diff` lists them."""
        lines = []
        for step in self.steps:
            if step.op == "same":
                continue
            mark = {"create": "+", "update": "~", "delete": "-"}[step.op]
            lines.append(f"{mark} {step.type} {step.name} {step.op}")
            for path, (old, new) in step.changes.items():
                lines.append(f"    ~ {path}: {old!r} => {new if new == COMPUTED else repr(new)}")
        return "\n".join(lines) or "no changes"


class Lifecycle:
    """One stack across runs: `preview()` and `up()` as the CLI runs them, against a checkpoint
    that only an `up` writes, and `config_set_path()` as `pulumi config set --path` edits."""

    def __init__(self, program: Any, stack: str, *, secrets: dict[str, str] | None = None):
        self.program = program
        self.stack = stack
        self.config, self.secret_keys = load_stack_yaml(Path.cwd() / f"Pulumi.{stack}.yaml")
        for key, value in (secrets or {}).items():
            self.config[full_key(key)] = value
            self.secret_keys.append(full_key(key))
        self.checkpoint: dict[tuple[str, str], Saved] = {}

    def config_set(self, key: str, value: Any) -> None:
        """`pulumi config set uninlu:key value`: a whole key."""
        self.config[full_key(key)] = encode(value)

    def config_set_path(self, path: str, value: Any) -> None:
        """`pulumi config set --path uninlu:a.b value`: one field inside an object key."""
        key, *fields = path.split(".")
        document = json.loads(self.config[full_key(key)])
        target = document
        for name in fields[:-1]:
            target = target[name]
        target[fields[-1]] = value
        self.config[full_key(key)] = encode(document)

    def preview(self) -> Outcome:
        return self._run(dry_run=True)

    def up(self) -> Outcome:
        return self._run(dry_run=False)

    def _run(self, dry_run: bool) -> Outcome:
        mocks = EngineMocks(self.checkpoint, dry_run, Path.cwd())
        monitor = RecordingMonitor(mocks)
        captured: dict[str, Any] = {}

        @pulumi.runtime.test
        def _run() -> pulumi.Output:
            pulumi.runtime.set_mocks(
                mocks, project=PROJECT, stack=self.stack, preview=dry_run, monitor=monitor
            )
            pulumi.runtime.set_all_config(dict(self.config), list(self.secret_keys))
            outputs = self.program()
            return pulumi.Output.all(**outputs).apply(
                lambda resolved: captured.update(out=resolved), run_with_unknowns=True
            )

        _run()
        # A resource of the checkpoint the program no longer registers is deleted, after every
        # create and update (the engine defers deletes to the end, newest first).
        registered = {(step.type, step.name) for step in mocks.steps}
        for key in reversed([key for key in self.checkpoint if key not in registered]):
            mocks.steps.append(Step(key[0], key[1], "delete"))
            if not dry_run:
                del self.checkpoint[key]
        outputs = {
            key: COMPUTED if isinstance(value, pulumi.output.Unknown) else value
            for key, value in captured["out"].items()
        }
        return Outcome(
            steps=mocks.steps, run=Run(stack=self.stack, monitor=monitor), outputs=outputs
        )
