"""What one tree's Pulumi program would release for a stack, printed as JSON: run as a script,
with the tree's root as the working directory, so that tree's own code computes its values.

    cd <tree> && python <this file> --stack prod

The program (`infra.program.deploy`, the tree's own) runs under Pulumi's mocks, as the tests run
it: every resource echoes its inputs, a build's digest is a fixed sentinel (only a real build can
know it) and so is the digest a promoted tag resolves to. No cluster, registry or Pulumi CLI is
needed. The config is what the CLI would pass for `Pulumi.<stack>.yaml`; encrypted values and the
registry password an operator sets outside the file (`pulumi config set --secret`) get a random
stand-in, and the probe fails rather than print one.

This file imports nothing from the project by name but `infra.program` of the working directory:
it runs against any revision of the tree (the head's probe computes the base's values).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import traceback
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import rpc

IMAGE_TYPE = "docker-build:index:Image"
RELEASE_TYPE = "kubernetes:helm.sh/v3:Release"
GET_REGISTRY_IMAGE = "docker:index/getRegistryImage:getRegistryImage"
# Digests only a build (or the registry, at deploy time) can know; the report shows placeholders.
BUILT_DIGEST = "sha256:" + "b" * 64
PROMOTED_DIGEST = "sha256:" + "e" * 64
# Set by an operator outside the stack file (README, docs/stack-config.md): `pulumi config set
# --secret uninlu:registryPassword`. The program refuses a stack whose image.username has none.
OUTSIDE_SECRETS = {"registryPassword": ("image", "username")}
COMPUTED = "<computed>"


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig


def plain(value: Any) -> Any:
    """Mock inputs as plain data: secrets unwrapped, unknowns COMPUTED, 2.0 back to 2 (the wire
    carries every number as a double; Helm reads every number as one too)."""
    if isinstance(value, pulumi.output.Unknown) or value == rpc.UNKNOWN:
        return COMPUTED
    if is_secret(value):
        return plain(value["value"])
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[tuple[str, str, dict[str, Any]]] = []
        self.promoted: list[str] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append((args.typ, args.name, args.inputs))
        outputs = dict(args.inputs)
        if args.typ == IMAGE_TYPE:
            outputs["digest"] = BUILT_DIGEST
            outputs["ref"] = f"{plain(args.inputs['tags'])[0]}@{BUILT_DIGEST}"
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        if args.token == GET_REGISTRY_IMAGE:
            name = args.args["name"]
            self.promoted.append(name)
            return {"id": name, "name": name, "sha256Digest": PROMOTED_DIGEST}
        return {}


def stack_file_config(project: str, path: Path, stand_in: str) -> tuple[dict[str, str], list[str]]:
    """What the CLI passes for this stack file: project keys prefixed, non-strings as JSON, and
    `secure:` values (which only the stack's passphrase decrypts) as stand-ins listed secret."""
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    config: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in (document.get("config") or {}).items():
        name = key if ":" in key else f"{project}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            config[name], secret_keys = stand_in, [*secret_keys, name]
        else:
            config[name] = value if isinstance(value, str) else json.dumps(value)
    return config, secret_keys


def stack_config(project: str, path: Path, stand_in: str) -> tuple[dict[str, str], list[str]]:
    """The stack file's config (`stack_file_config`) and the outside secrets as stand-ins."""
    config, secret_keys = stack_file_config(project, path, stand_in)
    for key, (section, field) in OUTSIDE_SECRETS.items():
        name = f"{project}:{key}"
        needed = json.loads(config.get(f"{project}:{section}", "{}")).get(field)
        if needed and name not in config:
            config[name], secret_keys = stand_in, [*secret_keys, name]
    return config, secret_keys


def settings_of(config: dict[str, str], secret_keys: list[str], project: str) -> dict[str, Any]:
    """The stack's plain `<project>:` keys, decoded (for the capacity consequence)."""
    prefix = f"{project}:"
    out: dict[str, Any] = {}
    for name, raw in config.items():
        if not name.startswith(prefix) or name in secret_keys:
            continue
        try:
            out[name[len(prefix) :]] = json.loads(raw) if raw[:1] in "{[" else raw
        except json.JSONDecodeError:
            out[name[len(prefix) :]] = raw
    return out


def probe(root: Path, stack: str) -> dict[str, Any]:
    """Run `root`'s program for `stack` (`root` must be the working directory and come first on
    sys.path, so that `infra.program` is that tree's)."""
    path = root / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        return {"stack": stack, "missing": True}
    project = yaml.safe_load((root / "Pulumi.yaml").read_text(encoding="utf-8"))["name"]
    stand_in = "stand-in-" + secrets.token_hex(16)
    config, secret_keys = stack_config(project, path, stand_in)
    mocks = Mocks()

    @pulumi.runtime.test
    def run() -> pulumi.Output:
        pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False)
        pulumi.runtime.set_all_config(dict(config), list(secret_keys))
        from infra.program import deploy  # the tree's own program

        outputs = deploy()
        return pulumi.Output.all(**outputs).apply(lambda _: None)

    run()
    releases, image = [], None
    for typ, name, inputs in mocks.resources:
        if typ == RELEASE_TYPE:
            given = plain(inputs)
            releases.append(
                {
                    "resource": name,
                    "name": given.get("name", name),
                    "chart": given.get("chart"),
                    "version": given.get("version"),
                    "namespace": given.get("namespace"),
                    "values": given.get("values") or {},
                    # What else Helm is told: timeout, atomic, the repository, ...
                    "inputs": {
                        key: value
                        for key, value in given.items()
                        if key not in ("name", "chart", "version", "namespace", "values")
                    },
                }
            )
        elif typ == IMAGE_TYPE:
            given = plain(inputs)
            given.pop("registries", None)  # credentials: never needed to tell images apart
            image = {"build": True, "inputs": given}
    if image is None and mocks.promoted:
        image = {"build": False, "ref": mocks.promoted[0]}
    result = {
        "stack": stack,
        "project": project,
        "releases": releases,
        "image": image,
        "settings": settings_of(config, secret_keys, project),
        "sentinels": {"built": BUILT_DIGEST, "promoted": PROMOTED_DIGEST},
    }
    if stand_in in json.dumps(result):
        raise RuntimeError("a secret reached the values the program releases; refusing to print")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True)
    args = parser.parse_args(argv)
    # Run as a script, this file's folder comes first on sys.path: the tree's own code must.
    root = Path.cwd()
    sys.path[0] = str(root)
    try:
        result = probe(root, args.stack)
    except Exception as err:  # the program's own message: a ConfigError names key and file
        message = str(err).strip() or type(err).__name__
        if not isinstance(err, pulumi.RunError):
            message = "".join(traceback.format_exception_only(err)).strip()
        print(json.dumps({"stack": args.stack, "error": message}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
