"""int8 against fp32 on a generated agreement set: span precision/recall/F1 and logit gaps.

    python -m bench.agreement_set [--model .models/base] [--cases 300] [--seed 1]

Both sides are the ONNX backend (torch-free) on the checkpoint's onnx/ folder: the fp32 graphs
are the reference (they give torch fp32's spans, tests/app/runtime/test_onnx_backend.py), the int8
graphs the candidate (`--int8-dir` points at another folder's encoder.int8.onnx and
cross.int8.onnx, e.g. to compare quantisation recipes). Cases come from app/tools/cases.py (flat and
nested extraction, classification, reading comprehension, long texts over several windows);
the calibration set uses another seed. Not a timing: run it on any machine.

Spans: an item is a whole output chain ({type, span, offset} from the root down); precision is
over int8's items, recall over fp32's. Logit gaps: the largest |int8 - fp32| of the head and
tail logits, over the rows both sides score with identical prompts (every first level; deeper
levels where the spans above agreed).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.model.pipeline import predict
from app.model.tokenizer import load_tokenizer
from app.runtime.onnx_backend import ONNX_DIR, OnnxBackend, graph_paths
from app.tools.cases import generate_cases
from bench.agreement import output_items

NO_LIMITS = {"max_prompt_rows": None, "max_cost": None}

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / ".models" / "base"
AGREEMENT_SEED = 1


class _Recorder:
    """Wraps a backend and keeps every score call's rows (prompt ids, offset) and logits."""

    def __init__(self, backend):
        self.backend = backend
        self.calls: list[tuple[list, list]] = []

    def encode(self, windows):
        return self.backend.encode(windows)

    def score(self, rows):
        out = self.backend.score(rows)
        keys = [(tuple(r.prompt_ids), r.position_offset, r.text_state.shape[0]) for r in rows]
        self.calls.append((keys, out))
        return out


@dataclass
class Tally:
    cases: int = 0
    identical: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    head: float = 0.0
    tail: float = 0.0
    forms: set = field(default_factory=set)

    def add(self, want: list, got: list, head: float, tail: float) -> None:
        a, b = output_items(want), output_items(got)
        self.cases += 1
        self.identical += want == got
        self.tp += len(a & b)
        self.fp += len(b - a)
        self.fn += len(a - b)
        self.head = max(self.head, head)
        self.tail = max(self.tail, tail)

    def row(self, name: str) -> str:
        p = self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0
        r = self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        return (
            f"| {name} | {self.cases} | {self.identical} | {self.tp + self.fn} | {p:.3f} | "
            f"{r:.3f} | {f1:.3f} | {self.head:.3f} | {self.tail:.3f} |"
        )


def _gaps(ref: _Recorder, cand: _Recorder) -> tuple[float, float]:
    head = tail = 0.0
    for (keys_a, out_a), (keys_b, out_b) in zip(ref.calls, cand.calls, strict=False):
        if keys_a != keys_b:
            break  # the spans above differed: later calls score different rows
        for (ha, ta), (hb, tb) in zip(out_a, out_b, strict=True):
            head = max(head, float(np.max(np.abs(ha - hb))))
            tail = max(tail, float(np.max(np.abs(ta - tb))))
    return head, tail


def run(
    model: Path,
    cases: list[dict],
    int8_dir: Path | None = None,
    threads: int | None = None,
    progress=None,
):
    """{form: Tally} plus "all", comparing int8 with fp32 case by case; `progress(done, total,
    tallies)` is called after each case (a long run shows where it is)."""
    folder = model / ONNX_DIR
    fp32 = OnnxBackend(*graph_paths(folder, int8=False), name="onnx-fp32", threads=threads)
    int8 = OnnxBackend(
        *graph_paths(int8_dir or folder, int8=True), name="onnx-int8", threads=threads
    )
    tokenizer = load_tokenizer(model)
    tallies: dict[str, Tally] = {}
    for case in cases:
        ref, cand = _Recorder(fp32), _Recorder(int8)
        # The model is measured, not admission: cases the server would refuse as too costly
        # (nested levels over long texts) are still compared, so the limits are lifted.
        want = predict(ref, tokenizer, case["text"], case["schema"], **NO_LIMITS)
        got = predict(cand, tokenizer, case["text"], case["schema"], **NO_LIMITS)
        head, tail = _gaps(ref, cand)
        form = case["task"].rsplit("-", 1)[0]
        for name in (form, "all"):
            tallies.setdefault(name, Tally()).add(want, got, head, tail)
        if progress:
            progress(tallies["all"].cases, len(cases), tallies)
    return tallies


def table(tallies: dict[str, Tally]) -> str:
    lines = [
        "| form | cases | identical outputs | fp32 spans | precision | recall | F1 | "
        "max head logit gap | max tail logit gap |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = [*sorted(k for k in tallies if k != "all"), "all"]
    return "\n".join(lines + [tallies[k].row(k) for k in order if k in tallies])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="checkpoint with onnx/")
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--seed", type=int, default=AGREEMENT_SEED)
    parser.add_argument("--int8-dir", help="folder of the int8 graphs (default: MODEL/onnx)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--progress-every", type=int, default=10, help="a progress line (stderr) every N cases"
    )
    args = parser.parse_args(argv)
    if args.cases < 1:
        parser.error("--cases must be at least 1")
    model = Path(args.model)
    for path in graph_paths(model / ONNX_DIR, int8=False):
        if not path.is_file():
            parser.error(
                f"missing {path}: run `python -m app.tools.export_onnx --model-path {model} --int8`"
            )
    cases = generate_cases(args.cases, args.seed)
    int8_dir = Path(args.int8_dir) if args.int8_dir else None
    start = time.monotonic()

    def progress(done: int, total: int, tallies: dict[str, Tally]) -> None:
        if done % args.progress_every == 0 or done == total:
            all_ = tallies["all"]
            print(
                f"[{time.monotonic() - start:6.0f} s] {done}/{total} cases, "
                f"{all_.identical} identical, {all_.tp + all_.fn} fp32 spans so far",
                file=sys.stderr,
                flush=True,
            )

    print(table(run(model, cases, int8_dir, args.threads, progress)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
