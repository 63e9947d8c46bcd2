"""The capacity consequence of a change, before and after, from the capacity record without
measuring (what `make plan STACK=<stack> PLAN_ARGS=--reuse` computes): the per-pod texts target
against one pod's recorded capacity, the most the stack carries within its SLO at maxReplicas,
and the stack's own HPA simulated on the planner's ramp to the declared peak.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from infra.capacity import plan, records
from infra.config import Settings, pod_cpus

LABEL_WIDTH = 34
COLUMN_WIDTH = 30


@dataclass(frozen=True)
class Side:
    """One tree's inputs: its stack settings, its capacity record file and its chart values."""

    settings: dict[str, Any] | None  # the plain `uninlu:` keys; None: the stack does not exist
    capacity_file: Path
    chart_values: Path


@dataclass
class Figures:
    runtime: str
    cpus: float | None
    record: dict | None
    enabled: bool
    pods_min: int
    pods_max: int
    target: float | None
    peak: float | None
    slo_ms: int
    ramp: dict | None

    @property
    def capacity(self) -> float | None:
        return float(self.record["texts_per_second"]) if self.record else None

    @property
    def most(self) -> float | None:
        """Texts/s within the SLO with every pod the stack may run."""
        return self.pods_max * self.capacity if self.capacity is not None else None


def _validated(raw: dict[str, Any]) -> Settings:
    known = {f.alias or name for name, f in Settings.model_fields.items()}
    return Settings.model_validate({k: v for k, v in raw.items() if k in known})


# Server settings that change no pod's capacity (logging, the shutdown budget).
_NOT_CAPACITY = {"log_level", "log_format", "graceful_shutdown_seconds"}


def _inputs(settings: Settings) -> dict[str, Any]:
    """What the consequence depends on in the stack: autoscaling, resources, capacity, the
    runtime and the server's limits."""
    return {
        "autoscaling": settings.autoscaling.model_dump(),
        "replicas": settings.replicas,
        "resources": settings.resources.model_dump() if settings.resources else None,
        "capacity": settings.capacity.model_dump(),
        "runtime": settings.image.runtime,
        "server": settings.server.model_dump(exclude=_NOT_CAPACITY),
    }


def _chart_defaults(chart_values: Path) -> tuple:
    """What the simulation reads from the chart: its HPA behaviour and readiness period."""
    if not chart_values.is_file():
        return (None, None)
    values = yaml.safe_load(chart_values.read_text(encoding="utf-8")) or {}
    readiness = ((values.get("probes") or {}).get("readiness") or {}).get("periodSeconds")
    return ((values.get("autoscaling") or {}).get("behavior"), readiness)


def figures(settings: Settings, side: Side) -> Figures:
    cpus = pod_cpus(settings)
    runtime = settings.image.runtime
    record = records.load(runtime, cpus, side.capacity_file) if cpus is not None else None
    scaling = settings.autoscaling
    ramp = plan.configured_ramp(settings, record, side.chart_values) if record else None
    return Figures(
        runtime=runtime,
        cpus=cpus,
        record=record,
        enabled=scaling.enabled,
        pods_min=scaling.min_replicas if scaling.enabled else settings.replicas,
        pods_max=scaling.max_replicas if scaling.enabled else settings.replicas,
        target=scaling.target_texts_per_second_per_pod if scaling.enabled else None,
        peak=settings.capacity.peak_texts_per_second,
        slo_ms=settings.capacity.slo_ms,
        ramp=ramp,
    )


def _n(value: float) -> str:
    return f"{value:.3g}"


def problems(after: Figures, before: Figures | None, stack: str) -> list[str]:
    """One line each for what the change leaves impossible: a peak out of reach within the SLO,
    a texts target above what one pod was measured to carry."""
    lines = []

    def unreachable(f: Figures | None) -> bool:
        return bool(f and f.peak is not None and f.most is not None and f.peak > f.most)

    def above(f: Figures | None) -> bool:
        return bool(f and f.target is not None and f.capacity is not None and f.target > f.capacity)

    if unreachable(after):
        assert after.peak is not None and after.most is not None and after.capacity is not None
        lines.append(
            f"! {stack}: the declared peak {_n(after.peak)} texts/s is out of reach within the "
            f"SLO: {after.pods_max} pods x {_n(after.capacity)} texts/s = {_n(after.most)} "
            f"texts/s at most" + (" (so before this change too)" if unreachable(before) else "")
        )
    if above(after):
        assert after.target is not None and after.capacity is not None
        lines.append(
            f"! {stack}: the per-pod texts target {_n(after.target)} is above the measured "
            f"capacity of one {after.runtime} pod with {after.cpus:g} CPUs "
            f"({_n(after.capacity)} texts/s within p95 <= {after.record['slo_p95_ms']} ms): the "
            "texts metric never adds a pod before the SLO breaks"
            + (" (so before this change too)" if above(before) else "")
        )
    return lines


def _rows(f: Figures | str | None) -> dict[str, str]:
    if f is None:
        return dict.fromkeys(_LABELS, "(no such stack)")
    if isinstance(f, str):
        return dict.fromkeys(_LABELS, f)
    if f.cpus is None:
        return dict.fromkeys(_LABELS, "no resources.limits.cpu")
    if f.record is None or f.capacity is None:
        return dict.fromkeys(_LABELS, f"no record: {f.runtime}, {f.cpus:g} CPUs")
    cap = f.capacity
    rows = {
        "pod": f"{_n(cap)} texts/s ({f.runtime}, {f.cpus:g} CPUs)",
        "pods": f"{f.pods_min} to {f.pods_max}" if f.enabled else f"fixed {f.pods_max}",
        "target": (
            f"{_n(f.target)} ({100 * f.target / cap:.0f} % of {_n(cap)})"
            if f.target is not None
            else ("CPU only" if f.enabled else "no HPA")
        ),
        "most": f"{_n(cap * f.pods_max)} ({f.pods_max} pods x {_n(cap)})",
        "peak": "none declared",
    }
    if f.peak is not None:
        share = 100 * f.peak / (cap * f.pods_max)
        rows["peak"] = f"{_n(f.peak)}: {share:.0f} % of the most" + (
            " (OUT OF REACH)" if share > 100 else ""
        )
    ramp = f.ramp
    if ramp is None:
        rows |= dict.fromkeys(("p95", "starts", "hours"), "no declared peak")
    else:
        starts = ramp.get("scaling_starts_at_texts_per_second")
        rows["p95"] = (
            f"{ramp['peak_p95_ms']:.0f} ms, {ramp['seconds_above_slo']} s over"
            if ramp["peak_p95_ms"] is not None
            else "nothing served"
        )
        if ramp["texts_429"]:
            rows["p95"] += f", {ramp['texts_429']:.0f} texts 429"
        rows["starts"] = (
            f"{_n(starts)} texts/s, {ramp['scaling_starts_at_s']} s in"
            if starts is not None
            else "never"
        )
        rows["hours"] = f"{ramp['replica_hours']:.2f} ({ramp['mean_replicas']:.1f} pods avg)"
    return rows


_LABELS = {
    "pod": "one pod within the SLO",
    "pods": "pods (HPA min to max)",
    "target": "per-pod texts target",
    "most": "most texts/s within the SLO",
    "peak": "declared peak, texts/s",
    "p95": "ramp: worst p95, time over SLO",
    "starts": "ramp: scaling starts at",
    "hours": "ramp: replica-hours",
}


def _fit(text: str) -> str:
    return text if len(text) <= COLUMN_WIDTH - 2 else text[: COLUMN_WIDTH - 3] + "…"


def table(before: Figures | str | None, after: Figures | str, slo_ms: int, minutes: float) -> str:
    """Before and after, one row per figure; `~` marks a row that changed."""
    old, new = _rows(before), _rows(after)
    head = f"{'':{LABEL_WIDTH + 2}}{'before':{COLUMN_WIDTH}}after"
    lines = [head]
    for key, label in _LABELS.items():
        mark = "~" if old[key] != new[key] else " "
        lines.append(f"{mark} {label:{LABEL_WIDTH}}{_fit(old[key]):{COLUMN_WIDTH}}{new[key]}")
    lines.append(
        f"  (SLO p95 <= {slo_ms} ms; the ramp goes from 10 % to the declared peak over half of "
        f"{minutes:g} min, through the stack's own HPA, as `make plan` simulates it)"
    )
    return "\n".join(lines)


@dataclass
class Consequence:
    problems: list[str]
    section: str


def consequence(stack: str, before: Side, after: Side) -> Consequence | None:
    """The section, when the change touches what capacity depends on (autoscaling, resources,
    capacity, the runtime, the server's limits, the capacity record or the chart's HPA
    defaults); None otherwise. `after.settings` must validate (the head's program accepted it)."""
    assert after.settings is not None
    new_settings = _validated(after.settings)
    old_settings: Settings | str | None = None
    if before.settings is not None:
        try:
            old_settings = _validated(before.settings)
        except ValidationError as err:
            old_settings = f"n/a ({err.error_count()} keys invalid now)"

    def depends(settings: Settings, side: Side) -> tuple:
        cpus = pod_cpus(settings)
        record = records.load(settings.image.runtime, cpus, side.capacity_file) if cpus else None
        return (_inputs(settings), record, _chart_defaults(side.chart_values))

    if isinstance(old_settings, Settings) and depends(old_settings, before) == depends(
        new_settings, after
    ):
        return None
    new = figures(new_settings, after)
    old = figures(old_settings, before) if isinstance(old_settings, Settings) else old_settings
    minutes = (new.ramp or {}).get("minutes", 30.0)
    header = (
        f"{stack}: capacity before and after (one pod's record in "
        f"infra/capacity/capacity.json{_record_date(new)}; computed as `make plan "
        f"STACK={stack} PLAN_ARGS=--reuse` does, nothing measured)"
    )
    section = header + "\n" + table(old, new, new.slo_ms, minutes)
    if new.record and new.record["slo_p95_ms"] != new.slo_ms:
        section += (
            f"\n  note: the record was measured within p95 <= {new.record['slo_p95_ms']} ms, "
            f"the stack asks {new.slo_ms} ms"
        )
    old_figures = old if isinstance(old, Figures) else None
    return Consequence(problems(new, old_figures, stack), section)


def _record_date(f: Figures) -> str:
    if not f.record:
        return ""
    note = ", provisional" if f.record.get("provisional") else ""
    return f" of {f.record['date'][:10]}{note}"
