"""Two renders of a chart compared object by object, in the format of the helm-diff plugin
(databus23/helm-diff): objects matched by API group, kind, namespace and name; a header per object
that changed, was added or was removed; a line diff of its YAML with a few lines of context;
Secret data masked with its length; a stable order (changed, then removed, then added, each by
key). The field-level summary of a changed object comes from deepdiff.
"""

from __future__ import annotations

import base64
import binascii
import copy
import difflib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from deepdiff import DeepDiff
from deepdiff.helper import notpresent

CONTEXT_LINES = 3
MESSAGES = {"MODIFY": "has changed:", "REMOVE": "has been removed:", "ADD": "has been added:"}
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, order=True)
class Key:
    """What matches an object across two renders: namespace, name, kind and API group (the
    apiVersion without its version, as helm-diff does, so a version bump is a change of the
    `apiVersion:` line, not a removal and an addition)."""

    namespace: str
    name: str
    kind: str
    group: str

    def __str__(self) -> str:
        return f"{self.namespace}, {self.name}, {self.kind} ({self.group})"


def api_group(api_version: str) -> str:
    """`apps/v1` -> `apps`, `networking.k8s.io/v1` -> `networking.k8s.io`, `v1` -> `v1`."""
    return api_version.rsplit("/", 1)[0] if "/" in api_version else api_version


def key_of(manifest: Mapping[str, Any], default_namespace: str) -> Key:
    metadata = manifest.get("metadata") or {}
    return Key(
        namespace=metadata.get("namespace") or default_namespace,
        name=str(metadata.get("name", "")),
        kind=str(manifest.get("kind", "")),
        group=api_group(str(manifest.get("apiVersion", ""))),
    )


def index(manifests: Iterable[Mapping[str, Any]], default_namespace: str) -> dict[Key, dict]:
    """The objects by key; a `*List` is split into its items. Two objects with one key are an
    error: Kubernetes would keep only one of them."""
    out: dict[Key, dict] = {}
    for manifest in manifests:
        if str(manifest.get("kind", "")).endswith("List") and "items" in manifest:
            out |= index(manifest["items"] or [], default_namespace)
            continue
        key = key_of(manifest, default_namespace)
        if key in out:
            raise ValueError(f"two rendered objects are {key}")
        out[key] = dict(manifest)
    return out


# --- masking ----------------------------------------------------------------------------------


def _secret_bytes(manifest: Mapping[str, Any]) -> dict[str, bytes]:
    """A Secret's values as the API server stores them: `data` base64-decoded, `stringData`
    (which wins) as UTF-8."""
    values: dict[str, bytes] = {}
    for key, value in (manifest.get("data") or {}).items():
        try:
            values[key] = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            values[key] = str(value).encode()
    for key, value in (manifest.get("stringData") or {}).items():
        values[key] = str(value).encode()
    return values


def _masked(manifest: Mapping[str, Any], values: dict[str, str]) -> dict:
    out = {key: value for key, value in manifest.items() if key != "stringData"}
    if values or "data" in manifest or "stringData" in manifest:
        out["data"] = dict(sorted(values.items()))
    return out


def mask_secrets(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None):
    """helm-diff's redaction of a Secret pair (either side may be None): every value becomes its
    length, `REDACTED # (N bytes)` where both sides hold the same bytes, else `-------- # (N
    bytes)` on the old side and `++++++++ # (N bytes)` on the new one. stringData is merged into
    data. Other kinds pass through unchanged."""
    if not any(m is not None and m.get("kind") == "Secret" for m in (old, new)):
        return old, new
    old_values = _secret_bytes(old) if old is not None else {}
    new_values = _secret_bytes(new) if new is not None else {}
    old_masked: dict[str, str] = {}
    new_masked: dict[str, str] = {}
    for key, value in old_values.items():
        same = key in new_values and new_values[key] == value
        old_masked[key] = f"{'REDACTED' if same else '--------'} # ({len(value)} bytes)"
    for key, value in new_values.items():
        same = key in old_values and old_values[key] == value
        new_masked[key] = f"{'REDACTED' if same else '++++++++'} # ({len(value)} bytes)"
    return (
        _masked(old, old_masked) if old is not None else None,
        _masked(new, new_masked) if new is not None else None,
    )


def substitute(value: Any, replacements: Mapping[str, str]) -> Any:
    """Every string inside `value` with each key of `replacements` replaced by its value (the
    digest sentinels by readable placeholders)."""
    if isinstance(value, str):
        for old, new in replacements.items():
            value = value.replace(old, new)
        return value
    if isinstance(value, dict):
        return {key: substitute(item, replacements) for key, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, replacements) for item in value]
    return value


# --- the comparison -------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (rule expressions, a dashboard's JSON) as `|` blocks, one line each."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(manifest: Mapping[str, Any]) -> str:
    """One object as YAML, keys in the template's order, long strings never folded."""
    return yaml.dump(
        dict(manifest), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1_000_000
    )


def _path(parts: list) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{json.dumps(str(part))}]"
    return out


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def field_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """One line per changed leaf field ("spec.maxReplicas: 5 -> 12", "+ path: value",
    "- path: value"), in document order of deepdiff's report, from already masked objects."""
    diff = DeepDiff(dict(old), dict(new), view="tree", threshold_to_diff_deeper=0, verbose_level=2)
    lines: list[tuple[str, str]] = []
    for levels in diff.values():
        for level in levels:
            path = _path(level.path(output_format="list"))
            if level.t1 is notpresent:
                lines.append((path, f"+ {path}: {_short(level.t2)}"))
            elif level.t2 is notpresent:
                lines.append((path, f"- {path}: {_short(level.t1)}"))
            else:
                lines.append((path, f"~ {path}: {_short(level.t1)} -> {_short(level.t2)}"))
    return [line for _, line in sorted(lines)]


def line_diff(old_text: str, new_text: str, context: int = CONTEXT_LINES) -> list[str]:
    """helm-diff's body: `- ` removed, `+ ` added, `  ` common lines; with context >= 0 only the
    lines within `context` of a change, each omitted run printed as one `...`."""
    old_lines, new_lines = old_text.splitlines(), new_text.splitlines()
    records: list[tuple[str, str]] = []
    matcher = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            records += [(" ", line) for line in old_lines[i1:i2]]
            continue
        records += [("-", line) for line in old_lines[i1:i2]]
        records += [("+", line) for line in new_lines[j1:j2]]
    # Each line's distance to the nearest change, from both sides (helm-diff calculateDistances).
    distance = [0 if mark != " " else len(records) for mark, _ in records]
    for i in range(1, len(records)):
        distance[i] = min(distance[i], distance[i - 1] + 1)
    for i in range(len(records) - 2, -1, -1):
        distance[i] = min(distance[i], distance[i + 1] + 1)
    out: list[str] = []
    omitting = False
    for i, (mark, line) in enumerate(records):
        if 0 <= context < distance[i]:
            if not omitting:
                out.append("...")
                omitting = True
            continue
        omitting = False
        out.append(f"{mark} {line}".rstrip() if line else mark.strip())
    return out


@dataclass
class Entry:
    """One object's section of the report."""

    key: Key
    change: str  # MODIFY, REMOVE or ADD
    fields: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def render(self) -> str:
        head = f"{self.key} {MESSAGES[self.change]}"
        return "\n".join([head, *(f"  {line}" for line in self.fields), *self.lines])


def compare(
    old: Mapping[Key, Mapping[str, Any]],
    new: Mapping[Key, Mapping[str, Any]],
    context: int = CONTEXT_LINES,
) -> list[Entry]:
    """The sections for every object that changed, was removed or was added, in helm-diff's
    order: changed, then removed, then added, each sorted by key."""
    modified, removed, added = [], [], []
    for key in sorted(old.keys() | new.keys(), key=str):
        before, after = mask_secrets(copy.deepcopy(old.get(key)), copy.deepcopy(new.get(key)))
        if before is not None and after is not None:
            if before == after:
                continue
            modified.append(
                Entry(
                    key,
                    "MODIFY",
                    field_changes(before, after),
                    line_diff(to_yaml(before), to_yaml(after), context),
                )
            )
        elif before is not None:
            removed.append(Entry(key, "REMOVE", [], line_diff(to_yaml(before), "", -1)))
        elif after is not None:
            added.append(Entry(key, "ADD", [], line_diff("", to_yaml(after), -1)))
    return modified + removed + added
