"""Redis goes away and comes back: calls are answered by the failure modes meanwhile, then
counted again without a restart."""

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio
import redis.exceptions

from bulwark.common.ratelimit_client import RateLimitClient
from bulwark.devstack.net import free_port
from bulwark.ratelimit.server import RateLimitServer

pytestmark = pytest.mark.security(stride="D", asvs=("V16.5",))

ServerFactory = Callable[..., Awaitable[RateLimitServer]]
REDIS_SERVER = shutil.which("redis-server")


class ThrowawayRedis:
    """A ``redis-server`` subprocess without persistence, on a fixed port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = await asyncio.create_subprocess_exec(
            REDIS_SERVER,
            *("--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        probe = redis.asyncio.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 5
        try:
            while True:
                try:
                    await probe.ping()
                except redis.exceptions.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
                else:
                    # The port was free a moment ago: make sure it is this process answering.
                    server = await probe.info("server")
                    assert server["process_id"] == self.process.pid, (
                        f"port {self.port} was taken by another Redis"
                    )
                    return
        finally:
            await probe.aclose()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.process = None


@pytest.fixture
async def throwaway_redis() -> AsyncIterator[ThrowawayRedis]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not on PATH")
    port = free_port()  # below the ephemeral range: no outgoing connection takes it
    instance = ThrowawayRedis(port)
    await instance.start()
    yield instance
    await instance.stop()


async def test_calls_succeed_again_when_redis_returns(
    start_server: ServerFactory, throwaway_redis: ThrowawayRedis
) -> None:
    server = await start_server(
        REDIS_URL=f"redis://127.0.0.1:{throwaway_redis.port}/0", REDIS_TIMEOUT_SECONDS="0.2"
    )
    client = RateLimitClient(f"127.0.0.1:{server.port}", "test", timeout_seconds=2.0)
    descriptor = [[("three_per_minute", "v")]]
    try:
        assert (await client.should_rate_limit(descriptor)).remaining == 2

        await throwaway_redis.stop()
        started = time.monotonic()
        # answered by the rule's failure mode (the default, allow), within the deadline
        assert (await client.should_rate_limit(descriptor)).allowed
        assert time.monotonic() - started < 1.0

        await throwaway_redis.start()  # same port, empty data, empty script cache
        decision = await client.should_rate_limit(descriptor)
        assert (decision.allowed, decision.remaining) == (True, 2)
    finally:
        await client.close()
