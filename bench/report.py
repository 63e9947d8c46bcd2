"""The benchmark's outputs: a Markdown table, a JSON file and a latency-vs-throughput plot."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt

from bench import stats


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def _num(value: float | None, fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


def steps_table(results: dict, contended: bool = False) -> str:
    """One row per (configuration, offered rate); the contended ladders with `contended`."""
    lines = [
        "| config | offered r/s | arrivals r/s | throughput r/s | p50 ms | p95 ms | p99 ms | "
        "errors | mean batch | model GFLOP/s | % of matmul peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for config in results["configs"]:
        ladder = config.get("contended", {}) if contended else config
        for step in ladder.get("steps", []):
            errors = str(step["errors"])
            if step["errors_by_kind"]:
                errors += (
                    " (" + ", ".join(f"{k}: {v}" for k, v in step["errors_by_kind"].items()) + ")"
                )
            lines.append(
                f"| {config['name']} | {step['offered_rps']:g} | "
                f"{step.get('arrival_rps', 0):.2f} | {step['throughput_rps']:.2f} | "
                f"{_ms(step['p50_s'])} | {_ms(step['p95_s'])} | {_ms(step['p99_s'])} | {errors} | "
                f"{_num(step.get('mean_batch_size'))} | {_num(step.get('model_gflops'))} | "
                f"{_num(step.get('flop_utilisation_pct'))} |"
            )
    return "\n".join(lines)


def summary_table(results: dict) -> str:
    """One row per configuration: the figures a capacity plan needs."""
    common = results.get("common_rate")
    lines = [
        f"| config | max r/s with p95 <= {results['slo_p95_s']:g} s and no error | "
        f"p95 ms at {_num(common, 'g')} r/s | saturated r/s | start-up to ready s | "
        "peak RSS MiB | best % of matmul peak | 5xx answers | output agreement vs torch fp32 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for config in results["configs"]:
        best = config.get("max_under_slo")
        at_common = next((s for s in config["steps"] if s["offered_rps"] == common), None)
        agreement = config.get("agreement") or {}
        steps = [*config["steps"], *([config["saturated"]] if config.get("saturated") else [])]
        utilisation = [s.get("flop_utilisation_pct") or 0.0 for s in steps]
        lines.append(
            f"| {config['name']} | {_num(best['throughput_rps'], '.2f') if best else 'none'} | "
            f"{_ms(at_common['p95_s']) if at_common else '-'} | {_saturated(config)} | "
            f"{_num(config.get('ready_s'))} | "
            f"{_num(config.get('peak_rss_bytes', 0) / 2**20, '.0f')} | "
            f"{_num(max(utilisation, default=None))}"
            f" | {config.get('server_errors_5xx', '-')} | {agreement.get('summary', '-')} |"
        )
    return "\n".join(lines)


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f} %"


def _best(ladder: dict) -> str:
    best = ladder.get("max_under_slo")
    return _num(best["throughput_rps"], ".2f") if best else "none"


def _at(ladder: dict, rate: float | None) -> dict | None:
    return next((s for s in ladder.get("steps", []) if s["offered_rps"] == rate), None)


def padding_table(results: dict) -> str:
    """Share of padded tokens in the backend calls of all load steps, per stage (from the
    server's uninlu_backend_tokens_total deltas)."""
    lines = [
        "| config | padded share, encode | padded share, score | padded share, all |",
        "|---|---|---|---|",
    ]
    for config in results["configs"]:
        share = config.get("padded_share") or {}
        lines.append(
            f"| {config['name']} | {_pct(share.get('encode'))} | {_pct(share.get('score'))} | "
            f"{_pct(share.get('all'))} |"
        )
    return "\n".join(lines)


def contention_table(results: dict) -> str:
    """Quiet against one core taken by a CPU hog: rate within the SLO and the retained share."""
    slo = results["slo_p95_s"]
    lines = [
        f"| config | quiet r/s within p95 <= {slo:g} s | with a core taken r/s | retained | "
        "saturated r/s quiet | saturated with a core taken | retained capacity | "
        "errors with a core taken |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for config in results["configs"]:
        contended = config.get("contended")
        if contended is None:
            continue
        errors = sum(s["errors"] for s in contended["steps"])
        errors += (contended.get("saturated") or {}).get("errors", 0)
        lines.append(
            f"| {config['name']} | {_best(config)} | {_best(contended)} | "
            f"{_pct(config.get('retained_share'))} | {_saturated(config)} | "
            f"{_saturated(contended)} | {_pct(config.get('retained_capacity'))} | {errors} |"
        )
    return "\n".join(lines)


def _saturated(run: dict) -> str:
    step = run.get("saturated")
    return "-" if not step else f"{step['throughput_rps']:.2f}"


def peer_table(results: dict) -> str:
    """Every configuration next to the ModelScope peer: rate within the SLO, p95 and errors at
    the common rate (the peer's 500 "Already borrowed" counted apart)."""
    common = results.get("common_rate")
    peer = next((c for c in results["configs"] if c["name"] == "peer"), None)
    peer_best = (peer or {}).get("max_under_slo")
    lines = [
        f"| config | r/s within SLO | x peer | p95 ms at {_num(common, 'g')} r/s | "
        f"errors at {_num(common, 'g')} r/s | of them 500 Already borrowed |",
        "|---|---|---|---|---|---|",
    ]
    for config in results["configs"]:
        best = config.get("max_under_slo")
        ratio = (
            f"{best['throughput_rps'] / peer_best['throughput_rps']:.1f}"
            if best and peer_best
            else "-"
        )
        step = _at(config, common)
        lines.append(
            f"| {config['name']} | {_best(config)} | {ratio} | "
            f"{_ms(step['p95_s']) if step else '-'} | {step['errors'] if step else '-'} | "
            f"{step.get('already_borrowed', 0) if step else '-'} |"
        )
    return "\n".join(lines)


def kernels_table(results: dict) -> str:
    peak = results["machine"]["matmul_peak_gflops"]
    lines = [
        "| backend | threads | rows per call | ms per call | model GFLOP/s | % of fp32 peak |",
        "|---|---|---|---|---|---|",
    ]
    for k in results.get("kernels", []):
        lines.append(
            f"| {k['kind']} | {k['threads']} | {k['rows']} | {k['seconds'] * 1000:.0f} | "
            f"{k['gflops']:.0f} | {100 * k['gflops'] / peak:.0f} |"
        )
    return "\n".join(lines)


def markdown(results: dict) -> str:
    machine = results["machine"]
    head = [
        "# uninlu benchmark",
        "",
        f"Checkpoint: {results['model']} ; mix: {results['mix_size']} single-level examples, "
        f"{results['flops_per_request_gflop']:.1f} GFLOP per request on average ; "
        f"{results['step_seconds']:g} s per offered rate, longer below "
        f"{stats.MIN_STEP_REQUESTS / results['step_seconds']:g} r/s so a step averages "
        f"{stats.MIN_STEP_REQUESTS} arrivals (Poisson).",
        f"Machine: {machine['cpus']} CPUs ({machine['cpu_model']}), "
        f"fp32 matmul peak {machine['matmul_peak_gflops']:.0f} GFLOP/s "
        f"({machine['matmul_peak_threads']} threads); load average at start "
        f"{_num((machine.get('loadavg_at_start') or [None])[0], '.2f')} (other processes "
        "on the machine slow every figure).",
        "",
        "## Summary",
        "",
        summary_table(results),
        "",
        "## Padded tokens in backend calls under load",
        "",
        padding_table(results),
        "",
    ]
    if any(c["name"] == "peer" for c in results["configs"]):
        head += ["## Against the ModelScope peer (seed-style server)", "", peer_table(results), ""]
    if any("contended" in c for c in results["configs"]):
        head += [
            "## One of the cores taken by a CPU hog",
            "",
            contention_table(results),
            "",
            "With a core taken:",
            "",
            steps_table(results, contended=True),
            "",
        ]
    head += ["## Every step", "", steps_table(results), ""]
    if results.get("kernels"):
        head += [
            "## Backends by rows per call and threads (encode + score of 64-token texts with "
            "an 8-token prompt)",
            "",
            kernels_table(results),
            "",
        ]
    return "\n".join(head)


def plot(results: dict, path: Path) -> None:
    """p50 (dashed) and p95 (solid) latency against achieved throughput, one colour per config."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for config in results["configs"]:
        steps = [s for s in config["steps"] if s["p95_s"] is not None]
        if not steps:
            continue
        x = [s["throughput_rps"] for s in steps]
        (line,) = ax.plot(x, [s["p95_s"] for s in steps], marker="o", label=f"{config['name']} p95")
        ax.plot(
            x, [s["p50_s"] for s in steps], ls="--", marker=".", color=line.get_color(), alpha=0.6
        )
        for s in steps:  # label each point with its offered rate
            ax.annotate(
                f"{s['offered_rps']:g}",
                (s["throughput_rps"], s["p95_s"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color=line.get_color(),
            )
    ax.axhline(
        results["slo_p95_s"], color="grey", ls=":", label=f"SLO p95 {results['slo_p95_s']:g} s"
    )
    ax.set_yscale("log")
    ax.set_xlabel("throughput (successful requests/s)")
    ax.set_ylabel("latency (s); solid p95, dashed p50; labels: offered r/s")
    ax.set_title("uninlu: latency against throughput (single-level mix)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(results: dict, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "results.json",
        "table": out_dir / "report.md",
        "plot": out_dir / "latency_vs_throughput.png",
    }
    paths["json"].write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
    paths["table"].write_text(markdown(results), encoding="utf-8")
    plot(results, paths["plot"])
    return paths
