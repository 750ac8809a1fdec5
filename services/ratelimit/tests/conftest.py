"""Fixtures: real Redis (``TEST_REDIS_URL``), real grpc.aio servers on port 0, real channels.

Every test gets its own random key prefix, and its keys are deleted afterwards, so runs never
collide with each other or with anything else in the same Redis.
"""

import io
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
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
def free_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that nothing listens on: connections to it are refused.

    The port stays bound (without listening) for the whole test: released at once, it could be
    taken in between by any server that binds port 0 (another test's rate limiter, a Redis),
    and the test would be talking to that server instead of to nothing.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        yield port


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


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports whose cluster bus ports (+10000) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real three-master Redis Cluster on free loopback ports, for the whole session.

    Started with ``redis-server --cluster-enabled yes`` and ``redis-cli --cluster create``
    (about 2 s), stopped and deleted afterwards. Yields ``redis+cluster://127.0.0.1:PORT``.
    Skipped when ``redis-server`` or ``redis-cli`` is not on PATH.
    """
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        pytest.skip("redis-server and redis-cli are needed for the Redis Cluster tests")
    workdir = tmp_path_factory.mktemp("redis-cluster")
    ports = _free_ports(3)
    processes = [
        subprocess.Popen(  # noqa: S603 - fixed arguments, binary from PATH
            [
                server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{port}.conf",
                "--cluster-node-timeout",
                "2000",
                "--dir",
                str(workdir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        for port in ports:
            _wait(lambda port=port: _cli(cli, port, "ping") == "PONG", "redis-server start")
        subprocess.run(  # noqa: S603 - fixed arguments
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        for port in ports:
            _wait(
                lambda port=port: "cluster_state:ok" in _cli(cli, port, "cluster", "info"),
                "cluster state ok",
            )
        yield f"redis+cluster://127.0.0.1:{ports[0]}"
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def _cli(cli: str, port: int, *args: str) -> str:
    result = subprocess.run(  # noqa: S603 - fixed arguments
        [cli, "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    )
    return result.stdout.strip()


def _wait(ready: Callable[[], bool], what: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"redis cluster: no {what} within {seconds} s")
        time.sleep(0.05)
