"""A custom resource checked against its CRD as the API server checks it, offline: the version's
openAPIV3Schema (types, required fields, enums, bounds, patterns, int-or-string), unknown fields
(which the server would prune without a word: here errors, as `kubectl apply --validate=strict`
reports them), and the CEL rules (x-kubernetes-validations) this module knows. A CRD with a rule
it does not know is an error, so bumping the CRD cannot add a check that goes unchecked here.

The CRDs are test data under tests/infra/data/, each with a header naming its source and license.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

DATA = Path(__file__).resolve().parent / "data"
# KEDA's ScaledObject CRD at the version infra/monitoring.py installs (KEDA_VERSION).
KEDA_SCALEDOBJECT_CRD = DATA / "keda-scaledobjects-crd-v2.20.2.yaml"

# CEL rules by their text, each with a Python check of the object it is attached to.
KNOWN_RULES: dict[str, Callable[[dict], bool]] = {
    # keda.sh ScaledObject spec (apis/keda/v1alpha1/scaledobject_types.go): maxReplicaCount
    # defaults to 100.
    "!has(self.minReplicaCount) || self.minReplicaCount <= (has(self.maxReplicaCount) "
    "? self.maxReplicaCount : 100)": lambda spec: (
        "minReplicaCount" not in spec or spec["minReplicaCount"] <= spec.get("maxReplicaCount", 100)
    ),
}


def load_crd(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def version_schema(crd: dict[str, Any], api_version: str) -> dict[str, Any]:
    """The openAPIV3Schema of `group/version`, which the CRD must serve."""
    group, version = api_version.split("/")
    assert crd["spec"]["group"] == group, (crd["spec"]["group"], group)
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    return entry["schema"]["openAPIV3Schema"]


def _unknown_fields(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    errors: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if properties is not None and key in properties:
                errors += _unknown_fields(item, properties[key], where)
            elif isinstance(extra, dict):
                errors += _unknown_fields(item, extra, where)
            elif properties is not None:
                errors.append(f"{where}: unknown field (the API server would drop it)")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            errors += _unknown_fields(item, schema["items"], f"{path}[{index}]")
    return errors


def _cel_rules(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    errors: list[str] = []
    for validation in schema.get("x-kubernetes-validations", []):
        check = KNOWN_RULES.get(validation["rule"])
        if check is None:
            errors.append(f"{path or '.'}: CEL rule unknown to tests/infra/crd_schema.py: add it")
        elif isinstance(value, dict) and not check(value):
            errors.append(f"{path or '.'}: {validation['message']}")
    if isinstance(value, dict):
        for key, item in value.items():
            sub = (schema.get("properties") or {}).get(key)
            if sub is not None:
                errors += _cel_rules(item, sub, f"{path}.{key}" if path else key)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            errors += _cel_rules(item, schema["items"], f"{path}[{index}]")
    return errors


def validate_custom_resource(manifest: dict[str, Any], crd: dict[str, Any]) -> list[str]:
    """Every reason the API server would refuse (or silently change) `manifest` ([] = valid)."""
    if manifest.get("kind") != crd["spec"]["names"]["kind"]:
        return [f"kind {manifest.get('kind')!r} is not the CRD's {crd['spec']['names']['kind']!r}"]
    schema = version_schema(crd, manifest["apiVersion"])
    validator = jsonschema.Draft7Validator(schema)
    errors = [
        f"{'.'.join(str(part) for part in error.absolute_path) or '.'}: {error.message}"
        for error in sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
    ]
    return errors + _unknown_fields(manifest, schema, "") + _cel_rules(manifest, schema, "")
