"""What the scheduler benchmarks share (bench/heavy.py, bench/saturated.py): the machine's
description, the server of the scheduler before (an earlier commit, run from a temporary git
worktree so no switch for the old behaviour stays in the product), requests tagged with their
class, and the per-class table: p50/p95, 504s (and how many came late), 429s, and the share of
model tokens thrown away, from the server's own access log."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import stats

REPO = Path(__file__).resolve().parent.parent
# A 504 after more than this share of its deadline counts as late: the request ran (or waited)
# most of its time for nothing. 10 %: a refusal or an early stop leaves a client 90 % of its
# own limit to retry elsewhere; a 60 s limit then bounds the time lost to 6 s.
LATE_SHARE = 0.1


def machine() -> dict:
    """CPU model, logical cores and the vector extensions that decide the kernels' speed."""
    model, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile")
    return {
        "cpu": model,
        "logical_cores": os.cpu_count(),
        "extensions": [f for f in wanted if f in flags],
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def describe(m: dict) -> str:
    return (
        f"{m['cpu']}, {m['logical_cores']} logical cores, "
        f"{'/'.join(m['extensions']) or 'no AVX2'}, load {m['load_average_1m']:.2f}"
    )


@contextlib.contextmanager
def worktree(ref: str) -> Iterator[Path]:
    """A detached git worktree of `ref` in a temporary directory, removed afterwards."""
    parent = Path(tempfile.mkdtemp(prefix="uninlu-before-"))
    path = parent / "tree"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), ref],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)],
            check=False,
            capture_output=True,
        )
        with contextlib.suppress(OSError):
            parent.rmdir()


def server_command(tree: Path, without_torch: bool) -> list[str]:
    """`python -m app` of another tree, with this interpreter (same dependencies); without torch
    for the ONNX backends, as the lean image runs (infra/capacity/server.py). No braces: the
    command is formatted with {host} and {port}."""
    hide_torch = "sys.modules['torch'] = None; " if without_torch else ""
    code = (
        f"import os, runpy, sys; os.chdir({str(tree)!r}); sys.path.insert(0, {str(tree)!r}); "
        f"{hide_torch}runpy.run_module('app', run_name='__main__', alter_sys=True)"
    )
    return [sys.executable, "-c", code]


@dataclass(frozen=True)
class Outcome:
    request_id: str
    kind: str  # the request's class
    status: int  # 0: no answer (the client's timeout, a dropped connection)
    latency_s: float
    code: str = ""  # the error code of a JSON error answer


async def send(
    client: httpx.AsyncClient, body: dict, request_id: str, kind: str, timeout: float | None = None
) -> Outcome:
    started = time.perf_counter()
    code = ""
    try:
        response = await client.post(
            "/predict", json=body, headers={"X-Request-Id": request_id}, timeout=timeout
        )
        status = response.status_code
        if status != 200:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                code = response.json()["error"]["code"]
    except httpx.HTTPError:
        status = 0
    return Outcome(request_id, kind, status, time.perf_counter() - started, code)


def access_costs(log_path: Path) -> dict[str, tuple[int, int]]:
    """{request id: (status, model tokens it cost)} from the server's JSON access lines."""
    out = {}
    with contextlib.suppress(OSError):
        for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("logger") == "uninlu.access" and "request_id" in record:
                    out[record["request_id"]] = (record["status"], record.get("cost_tokens", 0))
    return out


def class_table(outcomes: list[Outcome], costs: dict, deadline_s: float) -> dict[str, dict]:
    """Per class (and `all`): requests, p50/p95 over every answer, 200s, 504s and those of them
    after LATE_SHARE of the deadline, 429s, 503s, other failures, and the wasted share: model
    tokens of the class's requests that ended without an output over all the class's tokens."""
    table = {}
    kinds = sorted({o.kind for o in outcomes})
    for kind in [*kinds, "all"]:
        mine = [o for o in outcomes if kind in (o.kind, "all")]
        spent = [costs.get(o.request_id, (o.status, 0))[1] for o in mine]
        wasted = sum(t for o, t in zip(mine, spent, strict=True) if o.status != 200)
        latencies = [o.latency_s for o in mine]
        late = [o for o in mine if o.status == 504 and o.latency_s > LATE_SHARE * deadline_s]
        table[kind] = {
            "requests": len(mine),
            "p50_s": stats.percentile(latencies, 50),
            "p95_s": stats.percentile(latencies, 95),
            "ok": sum(o.status == 200 for o in mine),
            "504": sum(o.status == 504 for o in mine),
            "504_late": len(late),
            "429": sum(o.status == 429 for o in mine),
            "503": sum(o.status == 503 for o in mine),
            "other": sum(o.status not in (200, 429, 503, 504) for o in mine),
            "tokens": sum(spent),
            "wasted_share": wasted / sum(spent) if sum(spent) else 0.0,
        }
    return table


def markdown(rows: list[dict]) -> str:
    """rows: {"scheduler", "class", **class_table row}."""
    head = (
        "| scheduler | class | requests | p50 | p95 | 200 | 504 (late) | 429 | 503 | other "
        "| wasted tokens |"
    )
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in rows:
        p50 = "-" if r["p50_s"] is None else f"{r['p50_s']:.3f} s"
        p95 = "-" if r["p95_s"] is None else f"{r['p95_s']:.3f} s"
        lines.append(
            f"| {r['scheduler']} | {r['class']} | {r['requests']} | {p50} | {p95} | {r['ok']} "
            f"| {r['504']} ({r['504_late']}) | {r['429']} | {r['503']} | {r['other']} "
            f"| {r['wasted_share']:.1%} |"
        )
    return "\n".join(lines)


def write_record(args, host: dict, rows: list[dict], name: str) -> Path:
    """The run's arguments, machine and rows as `args.out/name.json` (what bench/README cites)."""
    out = args.out / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("model", "out")}
    record = {"args": settings, "model": str(args.model), "machine": host, "rows": rows}
    out.write_text(json.dumps(record, indent=2, ensure_ascii=False))
    return out


def server_env(args, timeout_s: float, round_budget_ms: str | None = None) -> dict[str, str]:
    """The environment of a scenario's server: JSON access lines (what each request cost), the
    request time limit and, when given, the round budget."""
    return {
        "MODEL_PATH": str(args.model),
        "BACKEND": args.backend,
        "TORCH_THREADS": str(args.threads),
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        "GRACEFUL_SHUTDOWN_SECONDS": "2",
        "REQUEST_TIMEOUT_SECONDS": f"{timeout_s:g}",
        **({"ROUND_BUDGET_MS": round_budget_ms} if round_budget_ms else {}),
    }
