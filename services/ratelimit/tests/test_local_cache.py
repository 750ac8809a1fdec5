"""The local over-limit cache: a flood on one key stops reaching Redis.

Runs on a throwaway ``redis-server`` (its own process, nothing else talks to it), so the
``total_commands_processed`` delta of ``INFO stats`` is exactly what the service sent.
"""

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
import redis.exceptions
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2

from bulwark.devstack.net import free_port
from bulwark.ratelimit.cache import OverLimitCache
from bulwark.ratelimit.limiter import Limiter
from bulwark.ratelimit.rules import parse_rules
from bulwark.ratelimit.service import RateLimitService

pytestmark = pytest.mark.security(stride="D", asvs=("V2.4", "V15.2"))

REDIS_SERVER = shutil.which("redis-server")
RULES = """
domains:
  - domain: t
    descriptors:
      - key: ip
        rate_limit: {requests: 5, window_seconds: 60}
      - key: counted_ip
        algorithm: sliding_counter
        rate_limit: {requests: 5, window_seconds: 60}
      - key: short
        rate_limit: {requests: 1, window_seconds: 2}
      - key: long
        rate_limit: {requests: 2, window_seconds: 60}
"""
FLOOD = 500
Response = rls_pb2.RateLimitResponse


@pytest.fixture
async def throwaway() -> AsyncIterator[redis.asyncio.Redis]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not on PATH")
    port = free_port()  # below the ephemeral range: no outgoing connection takes it
    process = await asyncio.create_subprocess_exec(
        REDIS_SERVER,
        *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    client = redis.asyncio.Redis(port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + 5
    try:
        while True:
            try:
                await client.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        # The port was free a moment ago; had another server taken it since, this test would
        # count (and shut down) someone else's Redis.
        server = await client.info("server")
        assert server["process_id"] == process.pid, f"port {port} was taken by another Redis"
        yield client
    finally:
        await client.aclose()
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        await process.wait()


def request(key: str, value: str) -> Any:
    message = rls_pb2.RateLimitRequest(domain="t", hits_addend=1)
    message.descriptors.add().entries.append(
        ratelimit_pb2.RateLimitDescriptor.Entry(key=key, value=value)
    )
    return message


async def commands(client: redis.asyncio.Redis) -> int:
    stats = await client.info("stats")
    return int(stats["total_commands_processed"])


async def flood(service: RateLimitService, key: str, client: redis.asyncio.Redis) -> int:
    """Send `FLOOD` requests on one bucket; return Redis commands processed meanwhile."""
    before = await commands(client)
    codes = [
        (await service.ShouldRateLimit(request(key, "203.0.113.9"), None)).overall_code
        for _ in range(FLOOD)
    ]
    after = await commands(client)
    assert codes[:5] == [Response.OK] * 5
    assert set(codes[5:]) == {Response.OVER_LIMIT}
    return after - before - 1  # the first INFO is counted by the second


@pytest.mark.parametrize("key", ["ip", "counted_ip"])
async def test_flood_on_one_key_hits_redis_once_per_reset_with_the_cache(
    throwaway: redis.asyncio.Redis, key: str
) -> None:
    rules = parse_rules(RULES)
    limiter = Limiter(throwaway, 1.0)
    with_cache = RateLimitService(rules, limiter, "on:", OverLimitCache())
    without = RateLimitService(rules, limiter, "off:", None)
    cached = await flood(with_cache, key, throwaway)
    uncached = await flood(without, key, throwaway)
    print(f"{key}: Redis commands for {FLOOD} requests: {cached} with cache, {uncached} without")
    # Each request is one EVALSHA plus the script's own commands (3 or more); with the cache
    # only the 5 admitted requests and the first denial reach Redis (and a SCRIPT LOAD).
    assert uncached >= 3 * FLOOD
    assert cached <= 60
    assert cached * 20 < uncached


async def test_denials_are_answered_from_the_cache_even_when_redis_is_gone(
    throwaway: redis.asyncio.Redis,
) -> None:
    service = RateLimitService(
        parse_rules(RULES), Limiter(throwaway, 0.2), "gone:", OverLimitCache()
    )
    for _ in range(6):
        await service.ShouldRateLimit(request("ip", "x"), None)
    await throwaway.shutdown(nosave=True)
    answer = await service.ShouldRateLimit(request("ip", "x"), None)
    assert answer.overall_code == Response.OVER_LIMIT
    assert answer.statuses[0].duration_until_reset.ToMilliseconds() > 50_000


async def test_a_request_with_an_uncached_limit_reports_the_longest_wait(
    throwaway: redis.asyncio.Redis,
) -> None:
    service = RateLimitService(
        parse_rules(RULES), Limiter(throwaway, 1.0), "mix:", OverLimitCache()
    )
    for _ in range(2):  # `long` is now full (2 of 2) but was never denied, so not cached
        await service.ShouldRateLimit(request("long", "x"), None)
    for _ in range(2):  # `short` is denied once, so cached for its 2 s
        await service.ShouldRateLimit(request("short", "x"), None)
    both = request("short", "x")
    both.descriptors.add().entries.append(
        ratelimit_pb2.RateLimitDescriptor.Entry(key="long", value="x")
    )
    answer = await service.ShouldRateLimit(both, None)
    assert answer.overall_code == Response.OVER_LIMIT
    waits = [status.duration_until_reset.ToMilliseconds() for status in answer.statuses]
    # Redis judged both: the one-minute limit, not only the cached two seconds, is reported.
    assert max(waits) > 50_000


def test_cache_expires_and_is_bounded() -> None:
    cache = OverLimitCache(max_entries=2)
    cache.add("a", 1000, now=0.0)
    assert cache.remaining_ms("a", now=0.5) == 500
    assert cache.remaining_ms("a", now=1.0) == 0
    cache.add("a", 1000, now=10.0)
    cache.add("b", 1000, now=10.0)
    cache.add("c", 1000, now=10.5)  # full of live entries: not cached
    assert cache.remaining_ms("c", now=10.5) == 0
    cache.add("c", 1000, now=11.5)  # a and b expired and are swept
    assert cache.remaining_ms("c", now=11.5) == 1000
    cache.discard("c")
    assert len(cache) == 0 or cache.remaining_ms("c", now=11.5) == 0
