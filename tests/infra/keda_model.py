"""What a cluster does with the chart's autoscaler objects when a release switches engines: Helm's
upgrade, KEDA's admission webhook and operator, and the garbage collector, modelled closely on
their sources (no cluster here), so a test can replay a switch step by step.

- Helm 3 (helm/helm v3.19, the library behind pulumi-kubernetes' helm.v3.Release):
  pkg/action/upgrade.go and validate.go `existingResourceConflict` / `checkOwnership`: an object
  new to the release that already exists must carry the release's ownership metadata, else the
  upgrade stops before any change; pkg/kube/client.go `update`: every object of the new manifest
  is created or patched first, then those of the old manifest the new one lacks are deleted
  (background propagation). A patch is computed from the manifests (three-way), so fields that
  only the live object has, such as ownerReferences, survive it.
- KEDA v2.20.2 (kedacore/keda): apis/keda/v1alpha1/scaledobject_webhook.go `verifyHpas`, the
  check of a ScaledObject against the HPAs of its workload; controllers/keda/hpa.go
  `newHPAForScaledObject` / `updateHPAIfNeeded`, the HPA the operator writes (its labels, the
  ScaledObject's labels but the excluded ones, the ScaledObject's annotations, owned by it), and
  the metric specs of the prometheus and cpu scalers (pkg/scalers).
"""

from __future__ import annotations

import copy
from typing import Any

KEDA_VERSION = "2.20.2"
TRANSFER = "scaledobject.keda.sh/transfer-hpa-ownership"
EXCLUDED_LABELS = "scaledobject.keda.sh/hpa-excluded-labels"
SKIP_VALIDATION = "validations.keda.sh/hpa-ownership"
MANAGED_BY = "app.kubernetes.io/managed-by"

Key = tuple[str, str]  # (kind, name) in the release's namespace


def key(obj: dict[str, Any]) -> Key:
    return obj["kind"], obj["metadata"]["name"]


class HelmError(Exception):
    """A failed `helm upgrade` (what Pulumi reports for the release)."""


class KedaRefused(Exception):
    """KEDA's admission webhook refused a ScaledObject."""


def keda_webhook(scaled_object: dict, cluster: dict[Key, dict]) -> None:
    """verifyHpas: a ScaledObject is refused while an HPA it does not own targets its workload,
    unless it asks to take that HPA over by name."""
    target = scaled_object["spec"]["scaleTargetRef"]
    name = scaled_object["metadata"]["name"]
    annotations = scaled_object["metadata"].get("annotations", {})
    config = scaled_object["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {})
    kind = f"apps/v1.{target.get('kind', 'Deployment')}"
    for hpa in (obj for obj in cluster.values() if obj["kind"] == "HorizontalPodAutoscaler"):
        if hpa["metadata"].get("annotations", {}).get(SKIP_VALIDATION) == "false":
            continue
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) != (target.get("kind", "Deployment"), target["name"]):
            continue
        owners = hpa["metadata"].get("ownerReferences", [])
        if any(o["kind"] == "ScaledObject" and o["name"] == name for o in owners):
            continue
        hpa_name = hpa["metadata"]["name"]
        if annotations.get(TRANSFER) == "true":
            if config.get("name") == hpa_name:
                continue  # "hpa ownership being transferred"
            raise KedaRefused(
                f"the existing hpa '{hpa_name}' for workload '{target['name']}' of type '{kind}' "
                "must be specified by name in advanced settings to enable ownership transfer"
            )
        raise KedaRefused(
            f"the workload '{target['name']}' of type '{kind}' is already managed by the hpa "
            f"'{hpa_name}'"
        )


def _quantity(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{round(value * 1000)}m"


def keda_hpa(scaled_object: dict) -> dict:
    """The HPA KEDA's operator writes for a ScaledObject."""
    meta, spec = scaled_object["metadata"], scaled_object["spec"]
    config = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {})
    name = config.get("name") or f"keda-hpa-{meta['name']}"
    labels = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/version": KEDA_VERSION,
        "app.kubernetes.io/part-of": meta["name"],
        MANAGED_BY: "keda-operator",
    }
    excluded = set(meta.get("annotations", {}).get(EXCLUDED_LABELS, "").split(","))
    so_labels = {**meta.get("labels", {}), "scaledobject.keda.sh/name": meta["name"]}
    labels |= {k: v for k, v in so_labels.items() if k not in excluded}
    metrics = []
    for index, trigger in enumerate(spec["triggers"]):
        data = trigger["metadata"]
        if trigger["type"] == "prometheus":
            metrics.append(
                {
                    "type": "External",
                    "external": {
                        "metric": {
                            "name": f"s{index}-prometheus",
                            "selector": {
                                "matchLabels": {"scaledobject.keda.sh/name": meta["name"]}
                            },
                        },
                        "target": {
                            "type": trigger.get("metricType", "AverageValue"),
                            "averageValue": _quantity(float(data["threshold"])),
                        },
                    },
                }
            )
        elif trigger["type"] == "cpu":
            target = {"type": "Utilization", "averageUtilization": int(data["value"])}
            if "containerName" in data:
                source = {"name": "cpu", "container": data["containerName"], "target": target}
                metrics.append({"type": "ContainerResource", "containerResource": source})
            else:
                metrics.append({"type": "Resource", "resource": {"name": "cpu", "target": target}})
    metrics.sort(key=lambda metric: metric["type"])
    hpa_spec = {
        "scaleTargetRef": {
            "apiVersion": spec["scaleTargetRef"].get("apiVersion", "apps/v1"),
            "kind": spec["scaleTargetRef"].get("kind", "Deployment"),
            "name": spec["scaleTargetRef"]["name"],
        },
        "minReplicas": max(1, spec.get("minReplicaCount", 0)),
        "maxReplicas": spec.get("maxReplicaCount", 100),
        "metrics": metrics,
    }
    if "behavior" in config:
        hpa_spec["behavior"] = copy.deepcopy(config["behavior"])
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": dict(meta.get("annotations", {})),
            "ownerReferences": [{"kind": "ScaledObject", "name": meta["name"], "controller": True}],
        },
        "spec": hpa_spec,
    }


def keda_reconcile(cluster: dict[Key, dict]) -> None:
    """The operator's loop: every ScaledObject has its HPA, created or rewritten (taking over an
    existing one of that name)."""
    for scaled_object in [obj for obj in cluster.values() if obj["kind"] == "ScaledObject"]:
        hpa = keda_hpa(scaled_object)
        cluster[key(hpa)] = hpa


def _garbage_collect(cluster: dict[Key, dict], deleted: Key) -> None:
    for other in list(cluster):
        owners = cluster[other]["metadata"].get("ownerReferences", [])
        if any((o["kind"], o["name"]) == deleted for o in owners):
            del cluster[other]
            _garbage_collect(cluster, other)


def delete(cluster: dict[Key, dict], what: Key) -> None:
    """`kubectl delete` (or Helm's delete): the object, then what it owns (garbage collector)."""
    cluster.pop(what, None)
    _garbage_collect(cluster, what)


def _stamped(manifest: dict, release: str, namespace: str) -> dict:
    """Helm's ownership metadata, set on every object it applies (setMetadataVisitor)."""
    obj = copy.deepcopy(manifest)
    meta = obj["metadata"]
    meta.setdefault("labels", {})[MANAGED_BY] = "Helm"
    meta.setdefault("annotations", {}).update(
        {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": namespace}
    )
    return obj


def _ownership_problems(live: dict, release: str, namespace: str) -> list[str]:
    """checkOwnership: the label and the two annotations an object needs to join a release."""
    labels = live["metadata"].get("labels", {})
    annotations = live["metadata"].get("annotations", {})
    problems = []
    for where, values, name, wanted in (
        ("label", labels, MANAGED_BY, "Helm"),
        ("annotation", annotations, "meta.helm.sh/release-name", release),
        ("annotation", annotations, "meta.helm.sh/release-namespace", namespace),
    ):
        if name not in values:
            problems.append(
                f'{where} validation error: missing key "{name}": must be set to "{wanted}"'
            )
        elif values[name] != wanted:
            problems.append(
                f'{where} validation error: key "{name}" must equal "{wanted}": current value is '
                f'"{values[name]}"'
            )
    return problems


def helm_upgrade(
    cluster: dict[Key, dict],
    old: list[dict],
    new: list[dict],
    release: str,
    namespace: str,
    trace: list[str] | None = None,
) -> None:
    """One `helm upgrade` from manifest `old` to `new`, with KEDA's webhook on every ScaledObject
    it writes and KEDA's operator reconciling after each write. `trace` gets one line per step
    and the number of HPAs targeting each workload after it."""
    trace = trace if trace is not None else []
    old_keys = {key(m) for m in old if m["kind"] in WATCHED}
    targets = [_stamped(m, release, namespace) for m in new if m["kind"] in WATCHED]
    for obj in targets:
        if key(obj) not in old_keys and key(obj) in cluster:
            problems = _ownership_problems(cluster[key(obj)], release, namespace)
            if problems:
                raise HelmError(
                    f'Unable to continue with update: {obj["kind"]} "{obj["metadata"]["name"]}" '
                    f'in namespace "{namespace}" exists and cannot be imported into the current '
                    "release: invalid ownership metadata; " + "; ".join(problems)
                )
    for obj in targets:
        live = cluster.get(key(obj))
        if obj["kind"] == "ScaledObject":
            keda_webhook(obj, cluster)
        if live is None:
            cluster[key(obj)] = obj
            trace.append(f"create {key(obj)}")
        else:  # a patch from the manifests: what only the live object has stays
            owners = live["metadata"].get("ownerReferences")
            cluster[key(obj)] = obj
            if owners:
                obj["metadata"]["ownerReferences"] = owners
            trace.append(f"update {key(obj)}")
        keda_reconcile(cluster)
        trace.append(f"  autoscalers: {autoscalers(cluster)}")
    for gone in sorted(old_keys - {key(obj) for obj in targets}):
        if gone in cluster:
            delete(cluster, gone)
            trace.append(f"delete {gone}")
            trace.append(f"  autoscalers: {autoscalers(cluster)}")
            keda_reconcile(cluster)
            trace.append(f"  autoscalers: {autoscalers(cluster)}")


# The kinds whose lifecycle matters here (the rest of the chart does not take part in a switch).
WATCHED = frozenset({"HorizontalPodAutoscaler", "ScaledObject"})


def autoscalers(cluster: dict[Key, dict]) -> dict[str, list[str]]:
    """HPA names per target workload: more than one at a time fight over the replica count."""
    found: dict[str, list[str]] = {}
    for obj in cluster.values():
        if obj["kind"] == "HorizontalPodAutoscaler":
            found.setdefault(obj["spec"]["scaleTargetRef"]["name"], []).append(
                obj["metadata"]["name"]
            )
    return found
