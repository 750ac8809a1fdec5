"""The closed loop that drives every subject of ``bench.ratelimit``, and the figures it yields."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

WARM_UP_SECONDS = 0.5

# One decision: (worker index, bucket) -> awaitable; raising counts the call as an error.
Decide = Callable[[int, str], Awaitable[object]]


@dataclass(frozen=True)
class Figure:
    """One subject at one concurrency: decisions per second and latency in milliseconds.

    ``note`` says why a subject was skipped (its other fields are then NaN)."""

    rps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    errors: int
    note: str = ""

    @classmethod
    def of(cls, sorted_latencies: Sequence[float], seconds: float, errors: int) -> Figure:
        """From the sorted latencies (seconds) of the calls answered in ``seconds``."""
        p50, p99, p999 = (percentile(sorted_latencies, f) * 1000 for f in (0.5, 0.99, 0.999))
        return cls(len(sorted_latencies) / seconds, p50, p99, p999, errors)

    @classmethod
    def skipped(cls, why: str) -> Figure:
        return cls(math.nan, math.nan, math.nan, math.nan, 0, note=why)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(int(fraction * len(sorted_values)), len(sorted_values) - 1)
    return sorted_values[index]


def bucket(n: int, keys: int) -> str:
    """The ``n``-th call's per-IP bucket, one of about ``keys`` (as ``node/peer.js`` builds)."""
    k = n % keys
    return f"10.{k // 65536}.{k // 256 % 256}.{n % 256}"


async def closed_loop(
    decide: Decide, clients: int, seconds: float, keys: int
) -> tuple[list[float], int]:
    """``clients`` workers calling ``decide`` back to back for ``seconds`` after a warm-up;
    returns the sorted latencies (seconds) of the calls answered after it, and the errors."""
    latencies: list[float] = []
    errors = 0
    warm_until = time.monotonic() + WARM_UP_SECONDS
    stop = warm_until + seconds

    async def worker(index: int) -> None:
        nonlocal errors
        n = index
        while time.monotonic() < stop:
            began = time.perf_counter()
            n += clients
            try:
                await decide(index, bucket(n, keys))
            except Exception:  # noqa: BLE001 - counted, the benchmark goes on
                errors += 1
                continue
            if time.monotonic() >= warm_until:
                latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(worker(i) for i in range(clients)))
    latencies.sort()
    return latencies, errors
