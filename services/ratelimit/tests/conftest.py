"""Fixtures: real Redis (``TEST_REDIS_URL``), real grpc.aio servers on port 0, real channels.

Every test gets its own random key prefix, and its keys are deleted afterwards, so runs never
collide with each other or with anything else in the same Redis.
"""

import io
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio

from bulwark.common.logging import configure_logging
from bulwark.common.ratelimit_client import RateLimitClient
from bulwark.ratelimit.server import RateLimitServer, build_server
from bulwark.ratelimit.settings import from_env

TEST_RULES = """
domains:
  - domain: test
    descriptors:
      - key: three_per_minute
        rate_limit: {requests: 3, window_seconds: 60}
      - key: three_per_second
        rate_limit: {requests: 3, window_seconds: 1}
      - key: two_per_two_seconds
        rate_limit: {requests: 2, window_seconds: 2}
      - key: one_per_minute
        rate_limit: {requests: 1, window_seconds: 60}
      - key: fifty_per_minute
        rate_limit: {requests: 50, window_seconds: 60}
      - key: unlimited
"""

ServerFactory = Callable[..., Awaitable[RateLimitServer]]


@pytest.fixture(scope="session", autouse=True)
def log_stream() -> io.StringIO:
    """Every log line of the test run, as the JSON the service would print."""
    stream = io.StringIO()
    configure_logging("ratelimit", "INFO", stream=stream)
    return stream


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def key_prefix(redis_url: str) -> AsyncIterator[str]:
    prefix = f"rltest:{secrets.token_hex(8)}:"
    yield prefix
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (closed right after picking it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def rules_path(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(TEST_RULES)
    return path


@pytest.fixture
async def start_server(
    redis_url: str, key_prefix: str, rules_path: Path
) -> AsyncIterator[ServerFactory]:
    """Start a server on port 0; keyword arguments override environment variables."""
    servers: list[RateLimitServer] = []

    async def start(**overrides: str) -> RateLimitServer:
        environ = {
            "BULWARK_ENV": "test",
            "PORT": "0",
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": key_prefix,
            "RATELIMIT_RULES": str(rules_path),
            "REDIS_TIMEOUT_SECONDS": "0.5",
            **overrides,
        }
        server = build_server(from_env(environ))
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop(0)


@pytest.fixture
async def server(start_server: ServerFactory) -> RateLimitServer:
    return await start_server()


@pytest.fixture
async def client(server: RateLimitServer) -> AsyncIterator[RateLimitClient]:
    rl_client = RateLimitClient(f"127.0.0.1:{server.port}", "test", timeout_seconds=2.0)
    yield rl_client
    await rl_client.close()
