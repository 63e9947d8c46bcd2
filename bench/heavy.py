"""`python -m bench.heavy`: what one heavy request does to everyone else (issue 15).

Two measurements of the server's scheduler (least attained service first, app/serving/batching.py)
on a real server (`python -m app`); the figures of the schedulers it was chosen against, since
removed, are in bench/README.md ("Heavy requests"):

- `--mode probe` (the issue's report, before/after): a short NER request alone; the same short
  request sent 0.1 s after one heavy request (a 3,000-character text, a flat schema of 10 types);
  and, after a heavy request whose client gives up after 1 s, the next short request.
- `--mode load` (the bench scenario): the single-level mix of examples.json as Poisson load at a
  moderate rate, without and then with one heavy request every few seconds; the short requests'
  p50/p95 in both phases, and the heavy requests' latencies.

The heavy requests are sent with generous limits (REQUEST_TIMEOUT_SECONDS and MAX_REQUEST_COST
raised) so that scheduling, not the deadline or the cost budget, is what is measured. Prints a
table; writes bench/out/heavy-<mode>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx

from bench import mix, stats
from bench.server import ServerProcess
from infra.capacity import loadgen

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / ".models" / "base"
DEFAULT_OUT = REPO / "bench" / "out"
HEAVY_TYPES = ("人物", "地点", "组织机构", "时间", "事件", "产品", "数量", "职位", "作品", "奖项")
SHORT = {"text": "去年秋天，陈晓明在南京大学做了一场关于机器人的报告。", "schema": {"人物": None}}


def heavy_body(examples: list[dict], chars: int = 3000, types: int = 10) -> dict:
    """A long text made of the examples' texts, and a flat schema of `types` types."""
    text = "".join(e["text"] for e in examples)
    text = (text * (chars // max(len(text), 1) + 1))[:chars]
    return {"text": text, "schema": dict.fromkeys(HEAVY_TYPES[:types])}


def server_env(args) -> dict[str, str]:
    return {
        "MODEL_PATH": str(args.model),
        "BACKEND": args.backend,
        "TORCH_THREADS": str(args.threads),
        "LOG_LEVEL": "WARNING",
        "GRACEFUL_SHUTDOWN_SECONDS": "2",
        "MAX_TEXT_CHARS": "10000",
        "MAX_REQUEST_COST": "10000000",
        "REQUEST_TIMEOUT_SECONDS": "3600",
        **({"SLICE_TOKENS": str(args.slice_tokens)} if args.slice_tokens else {}),
    }


async def _timed(client: httpx.AsyncClient, body: dict, timeout: float | None = None) -> dict:
    start = time.perf_counter()
    try:
        response = await client.post("/predict", json=body, timeout=timeout)
        status = response.status_code
    except httpx.TimeoutException:
        status = 0  # the client gave up (and closed its connection)
    return {"status": status, "latency_s": time.perf_counter() - start}


async def probe(base_url: str, heavy: dict, repeats: int) -> dict:
    """Short alone; short 0.1 s after a heavy one; short after a heavy client gave up at 1 s."""
    async with httpx.AsyncClient(base_url=base_url, timeout=3600) as client:
        alone = [(await _timed(client, SHORT))["latency_s"] for _ in range(repeats)]
        heavy_task = asyncio.create_task(_timed(client, heavy))
        await asyncio.sleep(0.1)
        behind = await _timed(client, SHORT)
        heavy_done = await heavy_task
        gave_up = await _timed(client, heavy, timeout=1.0)
        after = await _timed(client, SHORT)
    return {
        "short_alone_p50_s": stats.percentile(alone, 50),
        "short_behind_heavy_s": behind["latency_s"],
        "heavy_s": heavy_done["latency_s"],
        "heavy_status": heavy_done["status"],
        "heavy_client_gave_up": gave_up["status"] == 0,
        "short_after_heavy_client_left_s": after["latency_s"],
    }


async def load(base_url: str, shorts: list[dict], heavy: dict, args) -> dict:
    """Phase 1: the short mix alone; phase 2: the same plus a heavy request every few seconds."""
    quiet = await loadgen.open_loop(base_url, shorts, args.rate, args.seconds, seed=1, timeout=600)
    heavies: list[dict] = []

    async def heavy_every() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=3600) as client:
            running = []
            end = time.perf_counter() + args.seconds
            while time.perf_counter() < end:
                running.append(asyncio.create_task(_timed(client, heavy)))
                await asyncio.sleep(args.heavy_every)
            heavies.extend(await asyncio.gather(*running))

    busy, _ = await asyncio.gather(
        loadgen.open_loop(base_url, shorts, args.rate, args.seconds, seed=1, timeout=600),
        heavy_every(),
    )
    without = stats.summarise(quiet, args.rate, args.seconds)
    with_heavy = stats.summarise(busy, args.rate, args.seconds)
    return {
        "short_p50_s": without["p50_s"],
        "short_p95_s": without["p95_s"],
        "short_p50_with_heavy_s": with_heavy["p50_s"],
        "short_p95_with_heavy_s": with_heavy["p95_s"],
        "short_errors_with_heavy": with_heavy["errors"],
        "heavy_sent": len(heavies),
        "heavy_p50_s": stats.percentile([h["latency_s"] for h in heavies], 50),
        "heavy_ok": sum(h["status"] == 200 for h in heavies),
    }


def table(mode: str, rows: list[dict]) -> str:
    if mode == "probe":
        head = "| backend | short alone p50 | short 0.1 s after a heavy one | heavy | short after the heavy client left at 1 s |"  # noqa: E501
        cells = [
            f"| {r['backend']} | {r['short_alone_p50_s']:.3f} s"
            f" | {r['short_behind_heavy_s']:.3f} s | {r['heavy_s']:.2f} s"
            f" | {r['short_after_heavy_client_left_s']:.3f} s |"
            for r in rows
        ]
    else:
        head = "| backend | short p50 | short p95 | with heavy: short p50 | short p95 | heavy p50 (ok/sent) |"  # noqa: E501
        cells = [
            f"| {r['backend']} | {r['short_p50_s']:.3f} s | {r['short_p95_s']:.3f} s"
            f" | {r['short_p50_with_heavy_s']:.3f} s | {r['short_p95_with_heavy_s']:.3f} s"
            f" | {r['heavy_p50_s'] or 0:.2f} s ({r['heavy_ok']}/{r['heavy_sent']}) |"
            for r in rows
        ]
    rule = "|" + "---|" * head.count(" | ") + "---|"
    return "\n".join([head, rule, *cells])


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
    p.add_argument("--slice-tokens", type=int, default=0, help="SLICE_TOKENS (0: default)")
    p.add_argument("--chars", type=int, default=3000, help="heavy text length")
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
    log = args.out / "logs" / f"heavy-{args.mode}.log"
    onnx = args.backend.startswith("onnx")
    with ServerProcess(server_env(args), log, without_torch=onnx) as server:
        print(f"== {args.backend}: ready after {server.ready_s:.1f} s", flush=True)
        if args.mode == "probe":
            result = asyncio.run(probe(server.base_url, heavy, args.repeats))
        else:
            result = asyncio.run(load(server.base_url, shorts, heavy, args))
    rows = [{"backend": args.backend, **result}]
    print(json.dumps(rows[0]), flush=True)
    out = args.out / f"heavy-{args.mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("model", "out")}
    out.write_text(json.dumps({"args": settings, "model": str(args.model), "rows": rows}, indent=2))
    print("\n" + table(args.mode, rows))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
