"""`python -m bench.saturated`: the scheduler under sustained overload, before and after.

A closed loop of `--clients` clients (default 8) replays a set of 30 valid requests, each
`--passes` times (default 3: 90 requests) in a shuffled order, against a real server with its
default limits (REQUEST_TIMEOUT_SECONDS 60, MAX_REQUEST_COST): the 14 examples of
app/model/examples.json (18 to 92 characters, flat and nested) and 16 long ones made of their
texts (150 to 1,235 characters: flat with 3 or 10 types, two-level and three-level schemas).
Each client sends its next request as soon as its answer came, so the server always has more
work than it can do quickly, and every request competes with the others for the whole run.

Per request class (short, nested: up to 100 characters; long, long-nested: longer) and in all:
p50/p95 over every answer, 200s, 504s and how many of them came after more than 10 % of the
deadline (bench/scheduling.py, LATE_SHARE), 429s, 503s, other failures (a 422 too_complex of a
nested level included), and the wasted share: model tokens of requests that ended without an
output over all the tokens the class cost, from the server's access log.

`--scheduler-before REF` first runs the same replay against the server of an earlier commit (a
temporary git worktree, same interpreter and checkpoint), then against this tree. Prints the
machine and the table; writes bench/out/saturated-<backend>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
from pathlib import Path

import httpx

from bench import heavy, mix, scheduling
from bench.server import ServerProcess

REPO = Path(__file__).resolve().parent.parent
SHORT_CHARS = 100  # a text up to this long is short
# The long requests: (characters, schema); flat, then two and three levels.
FLAT_3 = dict.fromkeys(heavy.HEAVY_TYPES[:3])
FLAT_10 = dict.fromkeys(heavy.HEAVY_TYPES)
TWO_LEVELS = {"人物": {"地点": None, "组织机构": None}}
THREE_LEVELS = {"组织机构": {"人物": {"职位": None}}}
LONG = (
    *((n, FLAT_3) for n in (200, 400, 700, 1000, 1235)),
    *((n, FLAT_10) for n in (300, 600, 1235)),
    *((n, TWO_LEVELS) for n in (150, 400, 800, 1235)),
    *((n, THREE_LEVELS) for n in (150, 400, 800, 1235)),
)


def request_class(body: dict) -> str:
    nested = any(v for v in body["schema"].values())
    size = "short" if len(body["text"]) <= SHORT_CHARS else "long"
    if size == "short":
        return "nested" if nested else "short"
    return "long-nested" if nested else "long"


def request_set(examples: list[dict]) -> list[dict]:
    """The examples and the long requests made of their texts: {"class", "body"} each."""
    bodies = [{"text": e["text"], "schema": e["schema"]} for e in examples]
    source = "".join(e["text"] for e in examples)
    for chars, schema in LONG:
        text = (source * (chars // len(source) + 1))[:chars]
        bodies.append({"text": text, "schema": schema})
    return [{"class": request_class(b), "body": b} for b in bodies]


async def replay(base_url: str, requests: list[dict], args) -> list[scheduling.Outcome]:
    """Closed loop: each client takes the next request of the shuffled list when answered."""
    order = [(p, i) for p in range(args.passes) for i in range(len(requests))]
    random.Random(args.seed).shuffle(order)
    queue = list(reversed(order))
    outcomes: list[scheduling.Outcome] = []
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    timeout = args.timeout + 60  # the server answers first; the client never gives up before
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits) as client:

        async def one_client() -> None:
            while queue:
                p, i = queue.pop()
                r = requests[i]
                rid = f"r{i}-p{p}"
                outcomes.append(await scheduling.send(client, r["body"], rid, r["class"]))

        await asyncio.gather(*(one_client() for _ in range(args.clients)))
    return outcomes


def server_env(args) -> dict[str, str]:
    return scheduling.server_env(args, args.timeout, args.round_budget_ms)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m bench.saturated", description=__doc__.splitlines()[0]
    )
    p.add_argument("--model", type=Path, default=heavy.DEFAULT_MODEL, help="checkpoint directory")
    p.add_argument("--out", type=Path, default=heavy.DEFAULT_OUT)
    p.add_argument("--examples", default=None, help="examples.json (default: the project's)")
    p.add_argument("--backend", default="onnx")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--passes", type=int, default=3, help="times each request is sent")
    p.add_argument("--limit", type=int, default=0, help="only the first N requests (0: all 30)")
    p.add_argument("--timeout", type=float, default=60.0, help="REQUEST_TIMEOUT_SECONDS")
    p.add_argument("--round-budget-ms", default="", help="ROUND_BUDGET_MS (default: server's)")
    p.add_argument("--scheduler-before", default="", metavar="REF",
                   help="first replay against the server of this git commit")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.model / "config.json").is_file():
        sys.exit(f"no checkpoint in {args.model}: run `make bench` once, or pass --model")
    requests = request_set(mix.load_examples(mix.find_examples(args.examples)))
    if args.limit:
        requests = requests[: args.limit]
    host = scheduling.machine()
    print(f"== machine: {scheduling.describe(host)}", flush=True)
    runs: list[tuple[str, str | None]] = [("after", None)]
    if args.scheduler_before:
        runs.insert(0, (f"before ({args.scheduler_before})", args.scheduler_before))
    onnx = args.backend.startswith("onnx")
    rows = []
    for n, (label, ref) in enumerate(runs):
        log = args.out / "logs" / f"saturated-{args.backend}-{n}.log"
        with scheduling.worktree(ref) if ref else contextlib.nullcontext() as tree:
            command = scheduling.server_command(tree, onnx) if ref else None
            with ServerProcess(server_env(args), log, without_torch=onnx, command=command) as srv:
                print(f"== {label}, {args.backend}: ready after {srv.ready_s:.1f} s", flush=True)
                outcomes = asyncio.run(replay(srv.base_url, requests, args))
        table = scheduling.class_table(outcomes, scheduling.access_costs(log), args.timeout)
        for kind, figures in table.items():
            rows.append({"scheduler": label, "backend": args.backend, "class": kind, **figures})
    out = scheduling.write_record(args, host, rows, f"saturated-{args.backend}")
    print(f"\nmachine: {scheduling.describe(host)}")
    print(scheduling.markdown(rows))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
