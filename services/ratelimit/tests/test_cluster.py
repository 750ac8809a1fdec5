"""Redis Cluster: settings, hash tags, and the service against a real three-master cluster."""

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio.cluster
from redis.asyncio.connection import SSLConnection
from redis.crc import key_slot

from bulwark.common.ratelimit_client import RateLimitClient
from bulwark.common.settings import SettingsError
from bulwark.ratelimit._generated.v1 import operator_pb2, operator_pb2_grpc
from bulwark.ratelimit.cluster import open_redis
from bulwark.ratelimit.rules import redis_key
from bulwark.ratelimit.server import RateLimitServer
from bulwark.ratelimit.settings import from_env

ServerFactory = Callable[..., Awaitable[RateLimitServer]]
REDIS = {"REDIS_URL": "redis://127.0.0.1:6379/0"}
RULES = """
domains:
  - domain: test
    descriptors:
      - key: ip
        rate_limit: {requests: 10, window_seconds: 60}
      - key: email
        rate_limit: {requests: 2, window_seconds: 60}
      - key: failed_email
        backoff: {failures: 1, window_seconds: 60, block_seconds: 30, max_block_seconds: 60}
      - key: failed_ip
        backoff: {failures: 1, window_seconds: 60, block_seconds: 30, max_block_seconds: 60}
"""


def test_cluster_from_scheme_or_flag() -> None:
    assert from_env({"REDIS_URL": "redis+cluster://10.0.0.1:7000"}).redis_cluster
    assert from_env({"REDIS_URL": "rediss+cluster://10.0.0.1:7000"}).redis_cluster
    assert from_env({**REDIS, "REDIS_CLUSTER": "true"}).redis_cluster
    assert not from_env(REDIS).redis_cluster
    with pytest.raises(SettingsError, match="REDIS_CLUSTER"):
        from_env({**REDIS, "REDIS_CLUSTER": "maybe"})
    with pytest.raises(SettingsError, match="REDIS_KEY_PREFIX"):
        from_env({**REDIS, "REDIS_KEY_PREFIX": "rl:{x}:"})


@pytest.mark.parametrize(
    ("url", "cluster", "tls"),
    [
        ("rediss://10.0.0.1:7000", True, True),
        ("rediss+cluster://10.0.0.1:7000", False, True),
        ("redis+cluster://10.0.0.1:7000", False, False),
    ],
)
def test_a_cluster_url_keeps_its_tls(url: str, cluster: bool, tls: bool) -> None:
    client = open_redis(url, cluster, timeout_seconds=1.0)
    assert isinstance(client, redis.asyncio.cluster.RedisCluster)
    assert (client.connection_kwargs["connection_class"] is SSLConnection) is tls


def test_a_bucket_and_its_derived_keys_share_one_slot() -> None:
    key = redis_key("rl:", "bulwark-auth", [("endpoint", "login"), ("email", "a@example.com")])
    assert all(
        key_slot((key + suffix).encode()) == key_slot(key.encode()) for suffix in (":c", ":d", ":b")
    )
    other = redis_key("rl:", "bulwark-auth", [("endpoint", "login"), ("email", "b@example.com")])
    assert key_slot(key.encode()) != key_slot(other.encode())  # buckets spread over the cluster


@pytest.fixture
def rules_path(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


@pytest.fixture
async def cluster_server(start_server: ServerFactory, redis_cluster_url: str) -> RateLimitServer:
    return await start_server(REDIS_URL=redis_cluster_url)


@pytest.fixture
async def cluster_client(cluster_server: RateLimitServer) -> AsyncIterator[RateLimitClient]:
    client = RateLimitClient(f"127.0.0.1:{cluster_server.port}", "test", timeout_seconds=2.0)
    yield client
    await client.close()


async def test_multi_slot_request_denied_consumes_nothing(
    cluster_client: RateLimitClient, key_prefix: str
) -> None:
    ip, email = [("ip", "198.51.100.7")], [("email", "victim@example.com")]
    slots = {key_slot(redis_key(key_prefix, "test", d).encode()) for d in (ip, email)}
    assert len(slots) == 2  # one script could not judge both (CROSSSLOT)
    for _ in range(2):
        assert (await cluster_client.should_rate_limit([ip, email])).allowed
    for _ in range(5):  # the email is full: denied, and the IP bucket is not touched
        assert not (await cluster_client.should_rate_limit([ip, email])).allowed
    assert (await cluster_client.should_rate_limit([ip], hits_addend=0)).remaining == 8


async def test_operator_api_on_the_cluster(
    cluster_server: RateLimitServer, cluster_client: RateLimitClient
) -> None:
    email = [("email", "locked@example.com")]
    for _ in range(3):
        await cluster_client.should_rate_limit([email])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{cluster_server.port}") as channel:
        operator: Any = operator_pb2_grpc.RateLimitOperatorStub(channel)
        descriptor = operator_pb2.Descriptor(
            entries=[operator_pb2.Entry(key="email", value="locked@example.com")]
        )
        usage = await operator.GetUsage(
            operator_pb2.GetUsageRequest(domain="test", descriptor=descriptor), timeout=2
        )
        assert (usage.used, usage.blocked) == (2, True)
        cleared = await operator.ClearKey(
            operator_pb2.ClearKeyRequest(domain="test", descriptor=descriptor), timeout=2
        )
        assert cleared.cleared
    assert (await cluster_client.should_rate_limit([email])).allowed


@pytest.mark.security(stride="S", asvs=("V2.4",))
async def test_failures_that_start_blocks_start_them_all_and_count_nothing_else(
    cluster_client: RateLimitClient, key_prefix: str
) -> None:
    """As on one Redis: a call whose email and IP backoffs both reach their limit starts both
    blocks, and its attempt descriptor (another slot) is not counted."""
    email, ip = [("failed_email", "v@example.com")], [("failed_ip", "198.51.100.9")]
    attempt = [("ip", "198.51.100.9")]
    slots = {key_slot((redis_key(key_prefix, "test", d) + ":b").encode()) for d in (email, ip)}
    slots.add(key_slot(redis_key(key_prefix, "test", attempt).encode()))
    assert len(slots) == 3
    assert (await cluster_client.should_rate_limit([email, ip, attempt])).allowed
    assert not (await cluster_client.should_rate_limit([email, ip, attempt])).allowed
    for blocked in (email, ip):
        assert not (await cluster_client.should_rate_limit([blocked], hits_addend=0)).allowed
    assert (await cluster_client.should_rate_limit([attempt], hits_addend=0)).remaining == 9
