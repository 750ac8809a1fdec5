"""The peers ``bench.ratelimit`` measures beside Bulwark, each in-process on the same Redis.

- ``limits``: the Python library's moving window (``limits.aio``, over redis-py's asyncio
  client), called by the closed loop of `bench.ratelimit.measure` in this process.
- ``rate-limiter-flexible``: node's library (``RateLimiterRedis`` over ioredis, its default
  client), run by ``node/peer.js`` in a node process; skipped when node or its packages
  (``npm ci --prefix bench/ratelimit/node``, which ``make bench-ratelimit`` runs) are missing.

Both use the same per-IP buckets and a limit high enough that every call is admitted, as the
service run does; a refused call is counted as an error.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from bench.ratelimit.measure import Figure, closed_loop

LIMIT_PER_MINUTE = 100_000  # as the service's bench rule: every call admitted
NODE_DIR = Path(__file__).parent / "node"


class RefusedError(Exception):
    """A peer refused a call that the benchmark's limit should have admitted."""


def limits_description() -> str:
    return f"limits {version('limits')} MovingWindowRateLimiter, redis-py {version('redis')}"


async def limits_moving_window(
    redis_url: str, prefix: str, clients: int, seconds: float, keys: int
) -> Figure:
    """``clients`` concurrent ``MovingWindowRateLimiter.hit`` calls in this process."""
    storage = RedisStorage(f"async+{redis_url}", implementation="redispy", key_prefix=prefix)
    limiter = MovingWindowRateLimiter(storage)
    item = RateLimitItemPerMinute(LIMIT_PER_MINUTE)

    async def decide(_index: int, ip: str) -> None:
        if not await limiter.hit(item, "remote_address", ip):
            raise RefusedError(ip)

    latencies, errors = await closed_loop(decide, clients, seconds, keys)
    return Figure.of(latencies, seconds, errors)


def rate_limiter_flexible(
    redis_url: str, prefix: str, clients: int, seconds: float, keys: int
) -> tuple[Figure, str]:
    """``node/peer.js`` at ``clients``; the figure and the versions it ran, or why skipped."""
    node = shutil.which("node")
    if node is None:
        return Figure.skipped("node not on PATH"), ""
    if not (NODE_DIR / "node_modules").is_dir():
        return Figure.skipped(f"no {NODE_DIR}/node_modules: npm ci --prefix {NODE_DIR}"), ""
    command = [
        node,
        str(NODE_DIR / "peer.js"),
        f"--redis-url={redis_url}",
        f"--clients={clients}",
        f"--seconds={seconds:g}",
        f"--keys={keys}",
        f"--prefix={prefix}",
    ]
    output = subprocess.run(  # noqa: S603 - fixed arguments
        command, capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    answer = json.loads(output)
    figure = Figure(
        answer["decisions_per_second"],
        answer["p50_ms"],
        answer["p99_ms"],
        answer["p999_ms"],
        answer["errors"],
    )
    versions = ", ".join(f"{name} {v}" for name, v in answer["versions"].items())
    return figure, versions
