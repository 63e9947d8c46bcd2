"""Open-loop load: requests arrive as a Poisson process at a fixed rate, whatever the server does.

A closed loop (N clients that wait for their answer) slows down with the server and hides queueing;
an open loop keeps sending, so latency under a given offered load is what a user would see.
The generator only talks to loopback, is bounded in request count and in time.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlparse

import httpx
import numpy as np

from infra.capacity.stats import Sample

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def poisson_arrivals(rate: float, duration: float, rng: np.random.Generator) -> list[float]:
    """Send times (s from start) of a Poisson process of `rate` per second within `duration`."""
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    # Draw enough gaps in one go (mean + 6 sigma), then cut at the duration.
    expected = rate * duration
    n = int(expected + 6 * np.sqrt(expected) + 10)
    times = np.cumsum(rng.exponential(1.0 / rate, size=n))
    return [float(t) for t in times[times < duration]]


def check_loopback(base_url: str) -> None:
    host = urlparse(base_url).hostname
    if host not in LOOPBACK:
        raise ValueError(f"the load generator only targets loopback, not {host!r}")


async def _one(client: httpx.AsyncClient, path: str, body: dict, pick: int, t0: float):
    start = time.perf_counter()
    try:
        response = await client.post(path, json=body)
        # A server error's body says why (the peer's "Already borrowed" is counted from it).
        status = response.status_code
        error = response.text[:200] if status >= 500 else ""
    except httpx.TimeoutException:
        status, error = 0, "timeout"
    except httpx.HTTPError as exc:
        status, error = 0, type(exc).__name__
    latency = time.perf_counter() - start
    return Sample(sent_at=start - t0, latency=latency, status=status, error=error, body_index=pick)


async def open_loop(
    base_url: str,
    bodies: list[dict],
    rate: float,
    duration: float,
    seed: int = 0,
    timeout: float = 30.0,
    path: str = "/predict",
) -> list[Sample]:
    """Send `bodies` (drawn at random, seeded) at Poisson times for `duration` seconds; return one
    Sample per request once every request has finished or timed out."""
    check_loopback(base_url)
    rng = np.random.default_rng(seed)
    arrivals = poisson_arrivals(rate, duration, rng)
    picks = rng.integers(0, len(bodies), size=len(arrivals))
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits) as client:
        t0 = time.perf_counter()
        tasks = []
        for at, pick in zip(arrivals, picks, strict=True):
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one(client, path, bodies[pick], int(pick), t0)))
        return list(await asyncio.gather(*tasks))


def run_open_loop(base_url: str, bodies: list[dict], rate: float, duration: float, **kw):
    return asyncio.run(open_loop(base_url, bodies, rate, duration, **kw))


async def closed_loop(
    base_url: str,
    bodies: list[dict],
    clients: int,
    duration: float,
    seed: int = 0,
    timeout: float = 30.0,
    path: str = "/predict",
) -> list[Sample]:
    """`clients` clients, each sending its next body (drawn at random, seeded) as soon as its
    previous answer came, for `duration` seconds: the server always has work, so the answers per
    second are its capacity (saturated throughput), whatever the latency."""
    check_loopback(base_url)
    rng = np.random.default_rng(seed)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    samples: list[Sample] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits) as client:
        t0 = time.perf_counter()

        async def one_client() -> None:
            while time.perf_counter() - t0 < duration:
                pick = int(rng.integers(0, len(bodies)))
                samples.append(await _one(client, path, bodies[pick], pick, t0))

        await asyncio.gather(*(one_client() for _ in range(clients)))
    return samples


def run_closed_loop(base_url: str, bodies: list[dict], clients: int, duration: float, **kw):
    return asyncio.run(closed_loop(base_url, bodies, clients, duration, **kw))
