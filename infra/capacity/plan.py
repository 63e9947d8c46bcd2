"""`make plan STACK=<stack>`: autoscaling targets from one pod's measured capacity, and their price.

1. Capacity of one pod for the stack's image.runtime and CPU limit (infra/capacity/measure.py:
   the SLO search on the full-size random checkpoint, server pinned to that many CPUs, plus
   start-up to ready), recorded in infra/capacity/capacity.json; `--reuse` plans from the record
   without measuring.
2. A recommendation for the stack's declared peak (capacity.peakTextsPerSecond) and SLO
   (capacity.sloP95Ms): the four autoscaling numbers with a reason each and the
   `pulumi config set` commands; and the HPA's per-direction tolerances (Kubernetes 1.35+).
3. The HPA simulated (infra/capacity/hpa_sim.py) on a step, a ramp, a daily curve and a 3x spike for
   CPU-only, texts-only and both metrics, and both metrics through KEDA (engine keda): a table, a
   PNG per shape, the seed-style figures; then the recommended tolerances against the default
   10 % on the ramp and the spike, for both engines.
`--validate` compares the per-pod model with a real pinned server at three offered rates.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import matplotlib
import numpy as np
import yaml

from infra.capacity import loadgen, measure, mix, records
from infra.capacity.checkpoint import DEFAULT_MODEL, ensure_model
from infra.capacity.hpa import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    TOLERANCE,
    Controller,
    Policy,
    Rules,
)
from infra.capacity.hpa_sim import RATE_WINDOW_S, PodModel, Scaling, shapes, simulate, summarise
from infra.capacity.machine import machine_info
from infra.capacity.records import CAPACITY_FILE
from infra.config import TOLERANCE_SINCE, Settings, cpu_cores, pod_cpus

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the file backend

REPO = Path(__file__).resolve().parent.parent.parent
CHART_VALUES = REPO / "infra" / "chart" / "values.yaml"
DEFAULT_OUT = REPO / "infra" / "capacity" / "out"
HEADROOM = 0.7  # target = capacity x headroom (why: recommendation())
# Which metrics the simulated HPA reads, and through which engine.
VARIANTS = (("cpu", "hpa"), ("texts", "hpa"), ("both", "hpa"), ("both", "keda"))
# A tolerance below this many standard deviations of the texts metric at the target would act on
# noise: a 2 m count at the target exceeds 2 standard deviations about 2 % of the time.
NOISE_SIGMAS = 2.0


# --- the stack -----------------------------------------------------------------------------


def stack_settings(stack: str) -> Settings:
    """The stack file's plain keys, validated by the program's own model (secrets skipped)."""
    path = REPO / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise SystemExit(f"no {path.name}: STACK must name a stack file")
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    known = {field.alias or name for name, field in Settings.model_fields.items()}
    plain = {
        key.split(":", 1)[1]: value
        for key, value in document.get("config", {}).items()
        if key.startswith("uninlu:") and key.split(":", 1)[1] in known
    }
    return Settings.model_validate(plain)


def _rules(given, default_values: dict, fallback: Rules) -> Rules:
    """HPAScalingRules of one direction: the stack's, else the chart's default, else the API's."""
    source = given.model_dump(by_alias=True, exclude_none=True) if given else {}
    merged = {**default_values, **source}
    policies = tuple(
        Policy(p["type"], int(p["value"]), int(p["periodSeconds"]))
        for p in merged.get("policies", [])
    )
    return Rules(
        int(merged.get("stabilizationWindowSeconds", fallback.stabilization_window_seconds)),
        merged.get("selectPolicy", "Max"),
        policies or fallback.policies,
        merged.get("tolerance"),
    )


def behaviour(settings: Settings, chart_values: Path = CHART_VALUES) -> tuple[Rules, Rules]:
    chart = yaml.safe_load(chart_values.read_text(encoding="utf-8"))["autoscaling"]["behavior"]
    given = settings.autoscaling.behavior
    up = _rules(given.scale_up if given else None, chart["scaleUp"], DEFAULT_SCALE_UP)
    down = _rules(given.scale_down if given else None, chart["scaleDown"], DEFAULT_SCALE_DOWN)
    return up, down


def readiness_period(chart_values: Path = CHART_VALUES) -> float:
    chart = yaml.safe_load(chart_values.read_text(encoding="utf-8"))
    return float(chart["probes"]["readiness"]["periodSeconds"])


# --- the recommendation ------------------------------------------------------------------------


def recommendation(record: dict, settings: Settings, peak: float, headroom: float) -> dict:
    """The four numbers, each with the reason in one line."""
    cap = record["texts_per_second"]
    if cap <= 0:
        raise SystemExit("the recorded capacity is 0 texts/s: no step met the SLO")
    target = round(cap * headroom, 2)
    cpus = record["cpus"]
    request = _cpu_request(settings, cpus)
    # CPU use at the texts target: the pod's CPUs are busy in proportion to what it answers.
    cpu_at_target = 100 * cpus * min(1.0, target / record["service_rate"]) / request
    cpu_target = int(min(95, max(10, round(cpu_at_target))))
    fewest = 2 if settings.pdb.enabled else 1
    most = max(fewest, math.ceil(peak / target))
    lag = record["ready_seconds"]
    return {
        "targetTextsPerSecondPerPod": (
            target,
            f"capacity {cap:g} texts/s x headroom {headroom:g}: the HPA acts on a 2 m rate and a "
            f"new pod needs ~{lag:.0f} s to load, so pods must not run at the edge meanwhile",
        ),
        "targetCPUUtilizationPercentage": (
            cpu_target,
            f"a pod at the texts target uses ~{cpu_at_target:.0f} % of its CPU request: both "
            "metrics ask for a pod at the same load of the measured mix, and CPU also catches "
            "texts heavier than the mix (long texts, many types), which the count underrates",
        ),
        "minReplicas": (
            fewest,
            "the PodDisruptionBudget needs 2 pods so a node drain never stops the service"
            if settings.pdb.enabled
            else "no PodDisruptionBudget: one pod is enough at rest",
        ),
        "maxReplicas": (
            most,
            f"the declared peak {peak:g} texts/s / {target:g} per pod (beyond it, load above "
            "the peak is answered 429 rather than queued without bound)",
        ),
    }


def metric_noise(target: float, pods: int) -> float:
    """Relative standard deviation of the texts metric at the target with `pods` pods: the texts
    of one rate window are a Poisson count (the arrivals the capacity was measured with) of mean
    window x pods x target, and the metric is that count over the window and the pods."""
    return 1 / math.sqrt(RATE_WINDOW_S * pods * target)


def _up_to_hundredths(value: float) -> float:
    return math.ceil(round(value * 100, 6)) / 100


def recommend_tolerances(record: dict, rec: dict) -> dict:
    """The HPA's per-direction tolerances (behavior.scaleUp/scaleDown.tolerance), each with its
    reason: the texts metric's noise at the target, never above the default 10 %."""
    cap = record["texts_per_second"]
    target = rec["targetTextsPerSecondPerPod"][0]
    low, high = rec["minReplicas"][0], rec["maxReplicas"][0]
    up_noise = NOISE_SIGMAS * metric_noise(target, low)
    down_noise = NOISE_SIGMAS * metric_noise(target, high)
    up = min(TOLERANCE, max(0.01, _up_to_hundredths(up_noise)))
    down = min(TOLERANCE, max(0.01, _up_to_hundredths(down_noise)))
    return {
        "scaleUp": (
            up,
            f"{NOISE_SIGMAS:g} standard deviations of the texts metric at the target with "
            f"{low} pod(s) ({up_noise:.1%}: a {RATE_WINDOW_S:g} s Poisson count): a pod is added "
            f"from {target * (1 + up):.2f} texts/s per pod ({target * (1 + up) / cap:.0%} of "
            f"the capacity) instead of {target * (1 + TOLERANCE):.2f} "
            f"({target * (1 + TOLERANCE) / cap:.0%}), leaving the headroom to the model-load lag",
        ),
        "scaleDown": (
            down,
            f"{NOISE_SIGMAS:g} standard deviations at maxReplicas {high} ({down_noise:.1%}); it "
            f"binds only above {math.floor(1 / down)} pods (with fewer, a pod leaves only once "
            "the rest stay at or under the target), and the stabilisation window filters dips",
        ),
    }


def tolerance_commands(stack: str, tolerances: dict) -> list[str]:
    return [
        f"pulumi config set --path 'uninlu:autoscaling.behavior.{key}.tolerance' {value:g} "
        f"--stack {stack}"
        for key, (value, _) in tolerances.items()
    ]


def _cpu_request(settings: Settings, cpus: float) -> float:
    requests = settings.resources.requests if settings.resources else None
    return cpu_cores(requests["cpu"]) if requests and "cpu" in requests else cpus


def config_commands(stack: str, rec: dict) -> list[str]:
    return [
        f"pulumi config set --path 'uninlu:autoscaling.{key}' {value:g} --stack {stack}"
        for key, (value, _) in rec.items()
    ]


# --- the simulation ------------------------------------------------------------------------------


def pod_model(
    record: dict, settings: Settings, pull_s: float, chart_values: Path = CHART_VALUES
) -> PodModel:
    curve = sorted(record["curve"], key=lambda p: p["offered"])
    # The latency of what is admitted at an offered rate; above the plateau the queue model
    # adds the backlog, so the curve is used only up to the saturated throughput.
    below = [p for p in curve if p["offered"] <= record["service_rate"] * 1.05] or curve[:1]
    return PodModel(
        curve_rates=tuple(p["offered"] for p in below),
        curve_p95_s=tuple(p["p95_answered_ms"] / 1000 for p in below),
        service_rate=record["service_rate"],
        max_queue=settings.server.max_queue or record["max_queue"],
        ready_s=record["ready_seconds"],
        pull_s=pull_s,
        probe_period_s=readiness_period(chart_values),
        cpus=record["cpus"],
        cpu_request=_cpu_request(settings, record["cpus"]),
    )


def scaling_for(
    policy: str, rec: dict, up: Rules, down: Rules, scrape: float, engine: str = "hpa"
) -> Scaling:
    low, high = rec["minReplicas"][0], rec["maxReplicas"][0]
    return Scaling(
        low,
        high,
        rec["targetTextsPerSecondPerPod"][0] if policy in ("texts", "both") else None,
        rec["targetCPUUtilizationPercentage"][0] if policy in ("cpu", "both") else None,
        Controller(low, high, up, down),
        scrape_interval_s=scrape,
        engine=engine,
    )


def with_tolerance(rules: Rules, tolerance: float | None) -> Rules:
    return Rules(rules.stabilization_window_seconds, rules.select_policy, rules.policies, tolerance)


def tolerance_effect(
    loads: dict, model: PodModel, rec: dict, up: Rules, down: Rules, scrape: float,
    tolerances: dict, slo_s: float, fixed: int,
) -> list[dict]:  # fmt: skip
    """Both metrics on the ramp and the spike, per engine: the controller's default tolerance
    against the recommended ones. The reaction to the rise: when the first pod is added once the
    load starts to grow (and at what offered load), when it serves, and the latency, 429s and
    replica-hours of the whole run."""
    rows = []
    chosen = {"scaleUp": tolerances["scaleUp"][0], "scaleDown": tolerances["scaleDown"][0]}
    for name in ("ramp", "spike"):
        load = loads[name]
        rise = int(np.argmax(load > load[0] * 1.001))  # when the load starts to grow
        for engine in ("hpa", "keda"):
            recommended = (chosen["scaleUp"], chosen["scaleDown"])
            for label, pair in (("default", (None, None)), ("recommended", recommended)):
                scaling = scaling_for(
                    "both", rec, with_tolerance(up, pair[0]), with_tolerance(down, pair[1]),
                    scrape, engine,
                )  # fmt: skip
                run = simulate(load, model, scaling, start_replicas=scaling.min_replicas)
                figures = summarise(run, slo_s, fixed)
                first = next(
                    ((t, a, b) for t, a, b in run.scale_events if b > a and t >= rise), None
                )
                start = serving = None
                if first:
                    at = int(first[0])
                    start = (at, float(load[at]))
                    later = [i for i in range(at, len(run.ready)) if run.ready[i] > run.ready[at]]
                    serving = later[0] if later else None
                rows.append(
                    {
                        "shape": name,
                        "engine": engine,
                        "tolerances": label,
                        "up": pair[0] if pair[0] is not None else TOLERANCE,
                        "down": pair[1] if pair[1] is not None else TOLERANCE,
                        "first_scale_up_s": start[0] if start else None,
                        "first_scale_up_at_texts_per_second": start[1] if start else None,
                        "first_new_pod_serving_s": serving,
                        **figures,
                    }
                )
    return rows


def tolerance_table(rows: list[dict]) -> str:
    lines = [
        "| shape | engine | tolerances up/down | first scale-up after the rise s (at texts/s) | "
        "new pod serving s | peak p95 ms | s above SLO | texts 429 | replica-h |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        start = (
            f"{r['first_scale_up_s']} ({r['first_scale_up_at_texts_per_second']:.1f})"
            if r["first_scale_up_s"] is not None
            else "-"
        )
        serving = r["first_new_pod_serving_s"]
        lines.append(
            f"| {r['shape']} | {r['engine']} | {r['tolerances']} {r['up']:g}/{r['down']:g} | "
            f"{start} | {serving if serving is not None else '-'} | "
            f"{r['peak_p95_ms']:.0f} | {r['seconds_above_slo']} | {r['texts_429']:.0f} | "
            f"{r['replica_hours']:.2f} |"
        )
    return "\n".join(lines)


def seed_figures(run, load: np.ndarray, slo_s: float, fixed: int, ramp_end: int) -> dict:
    """What the seed tutorial claimed, for our service: the load when scaling started, the time
    until the first new pod served, p95 during the ramp, mean replicas against fixed."""
    first = next(((t, a, b) for t, a, b in run.scale_events if b > a), None)
    figures = {"scaling_starts_at_texts_per_second": None, "new_pod_serving_after_s": None}
    if first:
        at = int(first[0])
        figures["scaling_starts_at_texts_per_second"] = float(load[at])
        figures["scaling_starts_at_s"] = at
        later = [i for i in range(at, len(run.ready)) if run.ready[i] > run.ready[at]]
        figures["new_pod_serving_after_s"] = (later[0] - at) if later else None
    ramp_p95 = np.asarray(run.p95_s[:ramp_end], dtype=float)
    figures["ramp_peak_p95_ms"] = float(np.nanmax(ramp_p95)) * 1000
    figures["ramp_time_weighted_p95_ms"] = float(np.nanmean(ramp_p95)) * 1000
    mean = float(np.mean(run.pods))
    figures["mean_replicas"] = mean
    figures["fixed_replicas"] = fixed
    figures["cheaper_than_fixed_pct"] = 100 * (1 - mean / fixed)
    return figures


def default_scrape_interval(settings: Settings) -> float:
    """Prometheus' scrape interval: the dev Prometheus scrapes every 15 s, an operator's 30 s."""
    return 15.0 if settings.monitoring.install_prometheus else 30.0


def configured_scaling(settings: Settings, up: Rules, down: Rules, scrape: float) -> Scaling:
    """The HPA the stack configures (its own bounds and targets, not a recommendation); a fixed
    `replicas` when autoscaling is off."""
    scaling = settings.autoscaling
    if not scaling.enabled:
        fixed = settings.replicas
        return Scaling(fixed, fixed, None, None, Controller(fixed, fixed), scrape_interval_s=scrape)
    low, high = scaling.min_replicas, scaling.max_replicas
    return Scaling(
        low,
        high,
        scaling.target_texts_per_second_per_pod,
        scaling.target_cpu_utilization_percentage,
        Controller(low, high, up, down),
        scrape_interval_s=scrape,
    )


def configured_ramp(
    settings: Settings,
    record: dict,
    chart_values: Path = CHART_VALUES,
    pull_s: float = 20.0,
    minutes: float = 30.0,
) -> dict | None:
    """What `make plan --reuse` simulates, for the stack as configured: the ramp to the declared
    peak through the stack's own HPA, from the record, without measuring. None without a peak.
    The summary of the run (p95, 429s, replica-hours) and the seed-style figures (when scaling
    starts)."""
    peak = settings.capacity.peak_texts_per_second
    if peak is None:
        return None
    up, down = behaviour(settings, chart_values)
    model = pod_model(record, settings, pull_s, chart_values)
    scaling = configured_scaling(settings, up, down, default_scrape_interval(settings))
    load = shapes(peak, minutes)["ramp"]
    run = simulate(load, model, scaling, start_replicas=scaling.min_replicas)
    slo_s = settings.capacity.slo_ms / 1000
    ramp_end = int(len(load) * (1 / 6 + 1 / 2))
    return {
        **summarise(run, slo_s, scaling.max_replicas),
        **seed_figures(run, load, slo_s, scaling.max_replicas, ramp_end),
        "minutes": minutes,
        "peak": peak,
    }


def plot(name: str, load: np.ndarray, runs: dict, slo_s: float, out: Path) -> Path:
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    minutes = np.arange(load.size) / 60
    axes[0].plot(minutes, load, color="black")
    axes[0].set_ylabel("offered texts/s")
    for policy, run in runs.items():
        axes[1].plot(minutes, run.ready, label=policy)
        axes[2].plot(minutes, np.asarray(run.p95_s) * 1000, label=policy)
    axes[1].set_ylabel("ready replicas")
    axes[1].legend()
    axes[2].axhline(slo_s * 1000, color="red", linestyle="--", label="SLO")
    axes[2].set_ylabel("p95 (ms)")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("minutes")
    axes[2].legend()
    fig.suptitle(f"{name}: offered load, ready replicas, p95")
    fig.tight_layout()
    path = out / f"{name}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def table(rows: list[dict]) -> str:
    head = (
        "| shape | policy | engine | peak p95 ms | time-weighted p95 ms | s above SLO | texts 429 "
        "| replica-h | fixed replica-h | mean replicas |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['policy']} | {r['engine']} | {r['peak_p95_ms']:.0f} | "
            f"{r['time_weighted_p95_ms']:.0f} | {r['seconds_above_slo']} | {r['texts_429']:.0f} |"
            f" {r['replica_hours']:.2f} | {r['fixed_replica_hours']:.2f} | "
            f"{r['mean_replicas']:.2f} |"
        )
    return "\n".join(lines)


# --- validation against a real server ------------------------------------------------------------


def weighted_p95(run) -> float:
    """p95 over the admitted texts, each second's texts at that second's p95."""
    p95 = np.asarray(run.p95_s, dtype=float)
    weights = np.asarray(run.admitted, dtype=float)
    keep = ~np.isnan(p95) & (weights > 0)
    order = np.argsort(p95[keep])
    cumulative = np.cumsum(weights[keep][order])
    return float(p95[keep][order][np.searchsorted(cumulative, 0.95 * cumulative[-1])])


def validate(args, record: dict, settings: Settings, bodies: list[dict]) -> list[dict]:
    """Three offered rates (below, near, above capacity): the model's p95 and 429 share against
    a real pinned server's, in the same run (p95 over the answered texts on both sides)."""
    model = pod_model(record, settings, pull_s=0)
    cap = record["texts_per_second"]
    rows = []
    log = args.out / "logs" / "validate.log"
    with measure.pinned_server(
        args.model, record["runtime"], record["cpus"], model.max_queue, log
    ) as server:
        loadgen.run_open_loop(server.base_url, bodies, 1.0, 5.0, seed=1, timeout=120)
        # Below and at the SLO capacity, and half again above the saturated throughput.
        for rate in (round(cap * 0.5, 2), round(cap, 2), round(record["service_rate"] * 1.5, 2)):
            samples = loadgen.run_open_loop(
                server.base_url, bodies, rate, args.step_seconds, seed=11, timeout=600
            )
            real = measure.step_figures(samples, rate, args.step_seconds)
            one = Scaling(1, 1, None, None, Controller(1, 1))
            run = simulate(np.full(int(args.step_seconds), rate), model, one, start_replicas=1)
            sim_429 = float(np.sum(run.rejected)) / float(np.sum(run.offered))
            rows.append(
                {
                    "offered": rate,
                    "real_p95_ms": real["p95_answered_ms"],
                    "sim_p95_ms": 1000 * weighted_p95(run),
                    "real_share_429": real["share_429"],
                    "sim_share_429": sim_429,
                }
            )
    return rows


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m infra.capacity.plan", description=__doc__.splitlines()[0]
    )
    p.add_argument("--stack", required=True)
    p.add_argument("--reuse", action="store_true", help="plan from the record as is")
    p.add_argument("--validate", action="store_true", help="compare the model with a real server")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--examples", default=None, help="default: app/model/examples.json")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--capacity-file", type=Path, default=CAPACITY_FILE)
    p.add_argument("--step-seconds", type=float, default=30.0, help="per rate of the SLO search")
    p.add_argument("--rates", default="", help="comma-separated ladder (default: per runtime)")
    p.add_argument("--headroom", type=float, default=HEADROOM)
    p.add_argument("--pull-seconds", type=float, default=20.0, help="image pull + start (assumed)")
    p.add_argument("--scrape-interval", type=float, default=0.0, help="0: 15 s dev, 30 s else")
    p.add_argument("--minutes", type=float, default=30.0, help="step, ramp and spike length")
    p.add_argument("--day-minutes", type=float, default=24 * 60.0, help="the daily curve")
    p.add_argument("--provisional", default="", help="mark the record provisional, with why")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = stack_settings(args.stack)
    runtime, cpus = settings.image.runtime, pod_cpus(settings)
    if cpus is None:
        raise SystemExit(f"Pulumi.{args.stack}.yaml sets no resources.limits.cpu to plan for")
    peak = settings.capacity.peak_texts_per_second
    if peak is None:
        raise SystemExit(
            f"Pulumi.{args.stack}.yaml declares no peak: pulumi config set --path "
            f"'uninlu:capacity.peakTextsPerSecond' <texts/s> --stack {args.stack}"
        )
    slo_ms = settings.capacity.slo_ms
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"== {args.stack}: runtime {runtime}, {cpus:g} CPUs, SLO p95 {slo_ms} ms", flush=True)

    record = records.load(runtime, cpus, args.capacity_file)
    if args.reuse:
        if record is None:
            raise SystemExit(f"{args.capacity_file} has no {runtime} record at {cpus:g} CPUs")
        print(f"   reusing the record of {record['date']} ({args.capacity_file})")
    else:
        examples = mix.examples_file(args.examples)
        ensure_model(args.model, need_onnx=runtime != "torch", examples=args.examples)
        max_queue = settings.server.max_queue or measure.DEFAULT_MAX_QUEUE
        rates = [float(r) for r in args.rates.split(",") if r] or None
        bodies = mix.single_level_bodies(examples)
        record = measure.measure(
            args.model, runtime, cpus, slo_ms, bodies, args.step_seconds, max_queue,
            args.out / "logs", rates,
        )  # fmt: skip
        record["checkpoint"] = args.model.name
        record["machine"] = machine_info(max(1, math.ceil(cpus)))
        record["date"] = records.now_utc()
        if args.provisional:
            record["provisional"] = True
            record["note"] = args.provisional
        records.save(record, args.capacity_file)
        print(f"   recorded in {args.capacity_file}")
    if record["slo_p95_ms"] != slo_ms:
        print(f"   note: recorded at SLO {record['slo_p95_ms']} ms, the stack asks {slo_ms} ms")

    rec = recommendation(record, settings, peak, args.headroom)
    print(f"\ncapacity of one pod: {record['texts_per_second']:g} texts/s within p95 <= "
          f"{record['slo_p95_ms']} ms; saturated {record['service_rate']:g} texts/s; ready "
          f"after {record['ready_seconds']:.1f} s")  # fmt: skip
    print("\nrecommendation:")
    for key, (value, why) in rec.items():
        print(f"  {key} = {value:g}  # {why}")
    print("\napply with:")
    commands = config_commands(args.stack, rec)
    for line in commands:
        print("  " + line)

    up, down = behaviour(settings)
    scrape = args.scrape_interval or default_scrape_interval(settings)
    model = pod_model(record, settings, args.pull_seconds)
    fixed = rec["maxReplicas"][0]
    rows, plots, seed = [], [], None
    loads = shapes(peak, args.minutes, args.day_minutes)
    for name, load in loads.items():
        runs = {}
        for policy, engine in VARIANTS:
            scaling = scaling_for(policy, rec, up, down, scrape, engine)
            run = simulate(load, model, scaling, start_replicas=scaling.min_replicas)
            label = policy if engine == "hpa" else f"{policy} (keda)"
            runs[label] = run
            figures = summarise(run, slo_ms / 1000, fixed)
            rows.append({"shape": name, "policy": policy, "engine": engine, **figures})
        plots.append(plot(name, load, runs, slo_ms / 1000, args.out))
        if name == "ramp":
            ramp_end = int(len(load) * (1 / 6 + 1 / 2))
            seed = seed_figures(runs["both"], load, slo_ms / 1000, fixed, ramp_end)
    print(f"\nsimulation (scrape {scrape:g} s, pull {args.pull_seconds:g} s, sync 15 s):")
    print(table(rows))
    print("\nseed-style figures (ramp, both metrics):")
    for key, value in (seed or {}).items():
        print(f"  {key}: {value if not isinstance(value, float) else round(value, 2)}")

    tolerances = recommend_tolerances(record, rec)
    applies = settings.kubernetes_minor >= TOLERANCE_SINCE
    print("\nrecommended tolerances (behavior.scaleUp/scaleDown.tolerance; the default is 0.1):")
    for key, (value, why) in tolerances.items():
        print(f"  {key}.tolerance = {value:g}  # {why}")
    if applies:
        print("\napply with:")
        for line in tolerance_commands(args.stack, tolerances):
            print("  " + line)
    else:
        print(
            f"  not applicable yet: the stack declares kubernetesVersion "
            f"{settings.kubernetes_version}, the field needs 1.{TOLERANCE_SINCE} (on such a "
            f"cluster: pulumi config set uninlu:kubernetesVersion 1.{TOLERANCE_SINCE} --stack "
            f"{args.stack}, then the two commands below)"
        )
        for line in tolerance_commands(args.stack, tolerances):
            print("    " + line)
    effect = tolerance_effect(loads, model, rec, up, down, scrape, tolerances, slo_ms / 1000, fixed)
    print("\nsimulated effect of the tolerances (both metrics):")
    print(tolerance_table(effect))
    result = {
        "stack": args.stack,
        "record": record,
        "recommendation": {k: {"value": v, "why": w} for k, (v, w) in rec.items()},
        "commands": commands,
        "simulation": rows,
        "seed_figures": seed,
        "tolerances": {
            "recommended": {k: {"value": v, "why": w} for k, (v, w) in tolerances.items()},
            "applies": applies,
            "commands": tolerance_commands(args.stack, tolerances),
            "effect": effect,
        },
        "plots": [str(p) for p in plots],
    }
    if args.validate:
        print("\nvalidation: the per-pod model against a real pinned server", flush=True)
        bodies = mix.single_level_bodies(mix.examples_file(args.examples))
        result["validation"] = validate(args, record, settings, bodies)
        print("| offered texts/s | real p95 ms | sim p95 ms | real 429 % | sim 429 % |")
        print("|---|---|---|---|---|")
        for v in result["validation"]:
            print(
                f"| {v['offered']:g} | {v['real_p95_ms']:.0f} | {v['sim_p95_ms']:.0f} | "
                f"{100 * v['real_share_429']:.1f} | {100 * v['sim_share_429']:.1f} |"
            )
    path = args.out / f"plan-{args.stack}.json"
    path.write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")
    print("\nplots: " + ", ".join(str(p) for p in plots))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
