"""`python -m bench.heavy`: what one heavy request does to everyone else.

Two measurements of the server's scheduler (app/serving/batching.py: rounds of ROUND_BUDGET_MS of
backend time, least attained service first, deadline-driven urgency) on a real server
(`python -m app`); the figures of the schedulers it was chosen against are in bench/README.md
("Heavy requests"):

- `--mode probe` (the issue's report, before/after): a short NER request alone; the same short
  request sent 0.1 s after one heavy request (a 1,500-character text, a flat schema of 10 types);
  and, after a heavy request whose client gives up after 1 s, the next short request.
- `--mode load` (the bench scenario): the single-level mix of examples.json as Poisson load at a
  moderate rate, without and then with one heavy request every few seconds; per request class
  the p50/p95, 504s (late: after 10 % of the deadline), 429s and the share of model tokens
  thrown away (from the server's access log).

`--scheduler-before REF` runs the same measurement first against the server of an earlier commit
(a temporary git worktree; same interpreter and checkpoint), then against this tree;
`--round-budget-ms 100,150,200` runs this tree once per round budget. The heavy requests are sent
with generous limits (REQUEST_TIMEOUT_SECONDS and MAX_REQUEST_COST raised) so that scheduling,
not the deadline or the cost budget, is what is measured. Prints the machine and a table; writes
bench/out/heavy-<mode>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from bench import mix, scheduling, stats
from bench.server import ServerProcess
from infra.capacity import loadgen

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / ".models" / "base"
DEFAULT_OUT = REPO / "bench" / "out"
HEAVY_TYPES = ("人物", "地点", "组织机构", "时间", "事件", "产品", "数量", "职位", "作品", "奖项")
SHORT = {"text": "去年秋天，陈晓明在南京大学做了一场关于机器人的报告。", "schema": {"人物": None}}
HEAVY_TIMEOUT_S = 3600.0  # REQUEST_TIMEOUT_SECONDS of the probe and load servers


def heavy_body(examples: list[dict], chars: int = 1500, types: int = 10) -> dict:
    """A long text made of the examples' texts, and a flat schema of `types` types."""
    text = "".join(e["text"] for e in examples)
    text = (text * (chars // max(len(text), 1) + 1))[:chars]
    return {"text": text, "schema": dict.fromkeys(HEAVY_TYPES[:types])}


def server_env(args, round_budget_ms: float | None = None) -> dict[str, str]:
    """Generous limits, so that scheduling, not admission, decides what a heavy request meets."""
    budget = f"{round_budget_ms:g}" if round_budget_ms else None
    return {
        **scheduling.server_env(args, HEAVY_TIMEOUT_S, budget),
        "MAX_TEXT_CHARS": "10000",
        "MAX_REQUEST_COST": "10000000",
    }


def schedulers(args) -> list[tuple[str, float | None, str | None]]:
    """(label, round budget, git ref of an earlier tree or None for this one), in run order."""
    budgets = [float(b) for b in args.round_budget_ms.split(",") if b.strip()] or [None]
    runs: list[tuple[str, float | None, str | None]] = []
    if args.scheduler_before:
        runs.append((f"before ({args.scheduler_before})", None, args.scheduler_before))
    for budget in budgets:
        runs.append((f"after ({budget:g} ms)" if budget else "after", budget, None))
    return runs


@contextlib.contextmanager
def serve(args, label: str, budget: float | None, ref: str | None, log: Path):
    """The server of this tree, or of `ref` from a temporary worktree."""
    onnx = args.backend.startswith("onnx")
    with contextlib.ExitStack() as stack:
        command = None
        if ref:
            command = scheduling.server_command(stack.enter_context(scheduling.worktree(ref)), onnx)
        server = stack.enter_context(
            ServerProcess(server_env(args, budget), log, without_torch=onnx, command=command)
        )
        print(f"== {label}, {args.backend}: ready after {server.ready_s:.1f} s", flush=True)
        yield server


async def probe(base_url: str, heavy: dict, repeats: int) -> dict:
    """Short alone; short 0.1 s after a heavy one; short after a heavy client gave up at 1 s."""
    async with httpx.AsyncClient(base_url=base_url, timeout=HEAVY_TIMEOUT_S) as client:
        alone = [
            (await scheduling.send(client, SHORT, f"alone-{i}", "short")).latency_s
            for i in range(repeats)
        ]
        heavy_task = asyncio.create_task(scheduling.send(client, heavy, "heavy", "heavy"))
        await asyncio.sleep(0.1)
        behind = await scheduling.send(client, SHORT, "behind", "short")
        heavy_done = await heavy_task
        gave_up = await scheduling.send(client, heavy, "gave-up", "heavy", timeout=1.0)
        after = await scheduling.send(client, SHORT, "after", "short")
    return {
        "short_alone_p50_s": stats.percentile(alone, 50),
        "short_behind_heavy_s": behind.latency_s,
        "heavy_s": heavy_done.latency_s,
        "heavy_status": heavy_done.status,
        "heavy_client_gave_up": gave_up.status == 0,
        "short_after_heavy_client_left_s": after.latency_s,
    }


async def open_loop(base_url: str, bodies: list[dict], kind: str, args, seed: int) -> list:
    """Poisson arrivals of `bodies` (drawn at random, seeded), each tagged with its class."""
    rng = np.random.default_rng(seed)
    arrivals = loadgen.poisson_arrivals(args.rate, args.seconds, rng)
    picks = rng.integers(0, len(bodies), size=len(arrivals))
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits) as client:
        t0, tasks = time.perf_counter(), []
        for i, (at, pick) in enumerate(zip(arrivals, picks, strict=True)):
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            rid = f"{kind}-{seed}-{i}"
            tasks.append(asyncio.create_task(scheduling.send(client, bodies[pick], rid, kind)))
        return list(await asyncio.gather(*tasks))


async def load(base_url: str, shorts: list[dict], heavy: dict, args) -> list:
    """Phase 1: the short mix alone; phase 2: the same plus a heavy request every few seconds."""
    quiet = await open_loop(base_url, shorts, "short alone", args, seed=1)

    async def heavy_every() -> list:
        async with httpx.AsyncClient(base_url=base_url, timeout=HEAVY_TIMEOUT_S) as client:
            running, end, i = [], time.perf_counter() + args.seconds, 0
            while time.perf_counter() < end:
                send = scheduling.send(client, heavy, f"heavy-{i}", "heavy")
                running.append(asyncio.create_task(send))
                i += 1
                await asyncio.sleep(args.heavy_every)
            return list(await asyncio.gather(*running))

    busy, heavies = await asyncio.gather(
        open_loop(base_url, shorts, "short with heavy", args, seed=2), heavy_every()
    )
    return [*quiet, *busy, *heavies]


def probe_table(rows: list[dict]) -> str:
    head = "| scheduler | backend | short alone p50 | short 0.1 s after a heavy one | heavy | short after the heavy client left at 1 s |"  # noqa: E501
    cells = [
        f"| {r['scheduler']} | {r['backend']} | {r['short_alone_p50_s']:.3f} s"
        f" | {r['short_behind_heavy_s']:.3f} s | {r['heavy_s']:.2f} s"
        f" | {r['short_after_heavy_client_left_s']:.3f} s |"
        for r in rows
    ]
    return "\n".join([head, "|---" * 6 + "|", *cells])


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench.heavy", description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("probe", "load"), default="probe")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="checkpoint directory")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument(
        "--examples", default=None, help="examples.json (default: app/model/examples.json)"
    )
    p.add_argument("--backend", default="onnx-int8")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument(
        "--round-budget-ms", default="", help="ROUND_BUDGET_MS, comma-separated (default: server's)"
    )
    p.add_argument(
        "--scheduler-before",
        default="",
        metavar="REF",
        help="also measure the server of this git commit first (e.g. the one before the change)",
    )
    p.add_argument("--chars", type=int, default=1500, help="heavy text length")
    p.add_argument("--types", type=int, default=10, help="heavy schema types (flat)")
    p.add_argument("--repeats", type=int, default=5, help="probe: short requests alone")
    p.add_argument("--rate", type=float, default=2.0, help="load: short requests per second")
    p.add_argument("--seconds", type=float, default=60.0, help="load: duration of each phase")
    p.add_argument("--heavy-every", type=float, default=10.0, help="load: s between heavy ones")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.model / "config.json").is_file():
        sys.exit(f"no checkpoint in {args.model}: run `make bench` once, or pass --model")
    examples = mix.load_examples(mix.find_examples(args.examples))
    heavy = heavy_body(examples, args.chars, args.types)
    shorts = mix.single_level_mix(examples)
    host = scheduling.machine()
    print(f"== machine: {scheduling.describe(host)}", flush=True)
    rows: list[dict] = []
    for n, (label, budget, ref) in enumerate(schedulers(args)):
        log = args.out / "logs" / f"heavy-{args.mode}-{n}.log"
        with serve(args, label, budget, ref, log) as server:
            if args.mode == "probe":
                result = asyncio.run(probe(server.base_url, heavy, args.repeats))
                rows.append({"scheduler": label, "backend": args.backend, **result})
                print(json.dumps(rows[-1]), flush=True)
                continue
            outcomes = asyncio.run(load(server.base_url, shorts, heavy, args))
        table = scheduling.class_table(outcomes, scheduling.access_costs(log), HEAVY_TIMEOUT_S)
        for kind, figures in table.items():
            rows.append({"scheduler": label, "backend": args.backend, "class": kind, **figures})
    out = scheduling.write_record(args, host, rows, f"heavy-{args.mode}")
    print(f"\nmachine: {scheduling.describe(host)}")
    print(probe_table(rows) if args.mode == "probe" else scheduling.markdown(rows))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
