"""The README's benchmark picture, drawn from recorded figures (no measuring).

`python -m bench.plot_summary` reads bench/summary.json (the headline figures of the latest full
`make bench CONTENTION=1 PEER=1` run, copied from its table in bench/README.md) and writes
docs/img/benchmark.png: per configuration, the requests per second served within the latency SLO,
the saturated throughput, and the saturated throughput with one of the two cores taken.
After a new full run, update the JSON from its table and run this again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "bench" / "summary.json"
OUT = REPO / "docs" / "img" / "benchmark.png"

# (key in a config, legend text, colour); drawn top to bottom within a configuration's group.
SERIES = (
    (
        "within_slo_rps",
        "within the SLO (p95 <= {slo:g} s, no errors; none: above it at the lowest rate tried)",
        "#1b5e20",
    ),
    ("saturated_rps", "saturated (4 clients back to back)", "#1e88e5"),
    ("saturated_one_core_taken_rps", "saturated, one of the 2 cores taken by a CPU hog", "#90caf9"),
)


def plot(summary: dict, path: Path) -> Path:
    """Horizontal grouped bars, one group per configuration, in the file's order (top first)."""
    configs = summary["configs"]
    slo = summary["slo_p95_s"]
    height = 0.26
    fig, ax = plt.subplots(figsize=(9, 0.95 * len(configs) + 2.6))
    largest = max(c[key] or 0 for c in configs for key, _, _ in SERIES)
    for i, config in enumerate(configs):
        y0 = len(configs) - 1 - i
        for k, (key, label, colour) in enumerate(SERIES):
            y = y0 + (1 - k) * height
            value = config[key]
            ax.barh(
                y,
                value or 0,
                height=height * 0.92,
                color=colour,
                label=label.format(slo=slo) if i == 0 else None,
            )
            text = "none" if value is None else f"{value:.2f}"
            ax.text(
                (value or 0) + largest * 0.01,
                y,
                text,
                va="center",
                fontsize=8,
                color="#555555" if value is None else "black",
            )
    ax.set_yticks(range(len(configs)))
    ax.set_yticklabels([c["label"] for c in reversed(configs)])
    ax.set_xlim(0, largest * 1.12)
    ax.set_xlabel("requests per second, one pod (2 vCPUs)")
    ax.set_title(
        f"uninlu: what one pod serves ({summary['command']}, {summary['date']})\n"
        f"{summary['machine']}\n{summary['checkpoint']}, {summary['load']}",
        fontsize=10,
    )
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=1, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plot_summary", description=__doc__)
    parser.add_argument("--data", type=Path, default=DATA, help="figures (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=OUT, help="PNG to write (default: %(default)s)")
    args = parser.parse_args(argv)
    summary = json.loads(args.data.read_text(encoding="utf-8"))
    print(plot(summary, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
