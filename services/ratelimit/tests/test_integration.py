"""Integration tests: real Redis, real grpc.aio server on port 0, real channels via the client."""

import asyncio
import io
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
import redis.asyncio
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bulwark.common.ratelimit_client import (
    RateLimitClient,
    RateLimitDecision,
    RateLimitUnavailable,
)
from bulwark.ratelimit.server import RLS_SERVICE, RateLimitServer

ServerFactory = Callable[..., Awaitable[RateLimitServer]]
Code = rls_pb2.RateLimitResponse


def one(key: str, value: str = "v") -> list[list[tuple[str, str]]]:
    return [[(key, value)]]


async def raw_call(server: RateLimitServer, message: Any) -> Any:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        return await rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(message, timeout=2)


def raw_request(key: str, value: str = "v", domain: str = "test") -> Any:
    message = rls_pb2.RateLimitRequest(domain=domain)
    message.descriptors.add().entries.append(
        ratelimit_pb2.RateLimitDescriptor.Entry(key=key, value=value)
    )
    return message


@pytest.mark.security(stride="D", asvs=("V2.4",))
async def test_allows_the_limit_then_denies(client: RateLimitClient) -> None:
    decisions = [await client.should_rate_limit(one("three_per_minute")) for _ in range(4)]
    assert decisions[:3] == [
        RateLimitDecision(allowed=True, retry_after_seconds=0, remaining=n, limit=3)
        for n in (2, 1, 0)
    ]
    assert not decisions[3].allowed
    assert 59 <= decisions[3].retry_after_seconds <= 60
    assert (decisions[3].remaining, decisions[3].limit) == (0, 3)
    # Another value of the same key has its own bucket.
    assert (await client.should_rate_limit(one("three_per_minute", "other"))).allowed


@pytest.mark.security(stride="D", asvs=("V2.4",))
async def test_denied_requests_consume_nothing(client: RateLimitClient) -> None:
    descriptor = one("three_per_second")
    for _ in range(3):
        assert (await client.should_rate_limit(descriptor)).allowed
    await asyncio.sleep(0.5)
    for _ in range(5):  # had these counted, they would still fill the window below
        assert not (await client.should_rate_limit(descriptor)).allowed
    await asyncio.sleep(0.6)  # the first three have left the window
    results = [(await client.should_rate_limit(descriptor)).allowed for _ in range(4)]
    assert results == [True, True, True, False]


async def test_hits_addend_zero_checks_without_counting(client: RateLimitClient) -> None:
    descriptor = one("three_per_minute")
    for _ in range(5):
        check = await client.should_rate_limit(descriptor, hits_addend=0)
        assert (check.allowed, check.remaining) == (True, 3)
    assert (await client.should_rate_limit(descriptor, hits_addend=3)).remaining == 0
    check = await client.should_rate_limit(descriptor, hits_addend=0)
    assert (check.allowed, check.remaining) == (False, 0)  # one more would not fit
    assert check.retry_after_seconds >= 59


@pytest.mark.security(stride="D", asvs=("V2.4",))
async def test_request_denied_by_one_descriptor_consumes_no_other(
    client: RateLimitClient,
) -> None:
    both = [[("one_per_minute", "v")], [("three_per_minute", "v")]]
    first = await client.should_rate_limit(both)
    assert (first.allowed, first.remaining, first.limit) == (True, 0, 1)
    for _ in range(3):
        assert not (await client.should_rate_limit(both)).allowed
    check = await client.should_rate_limit(one("three_per_minute"), hits_addend=0)
    assert check.remaining == 2  # only the first, admitted request was counted


@pytest.mark.security(stride="D", asvs=("V2.4", "V15.4"))
async def test_concurrent_clients_admit_exactly_the_limit(
    server: RateLimitServer, redis_url: str, key_prefix: str
) -> None:
    clients = [RateLimitClient(f"127.0.0.1:{server.port}", "test", 5.0) for _ in range(10)]
    try:
        calls = [clients[i % 10].should_rate_limit(one("fifty_per_minute")) for i in range(200)]
        decisions = await asyncio.gather(*calls)
    finally:
        for rl_client in clients:
            await rl_client.close()
    assert sum(decision.allowed for decision in decisions) == 50
    store = redis.asyncio.Redis.from_url(redis_url)
    try:
        keys = [key async for key in store.scan_iter(match=f"{key_prefix}test:*")]
        assert len(keys) == 1  # the bucket (besides it, only the operators' block index)
        assert await store.zcard(keys[0]) == 50
        assert 0 < await store.pttl(keys[0]) <= 60_000
    finally:
        await store.aclose()


async def test_reset_is_the_true_remaining_time(server: RateLimitServer) -> None:
    first = await raw_call(server, raw_request("two_per_two_seconds"))
    assert first.statuses[0].duration_until_reset.ToMilliseconds() == 2000
    await asyncio.sleep(0.5)
    await raw_call(server, raw_request("two_per_two_seconds"))
    denied = await raw_call(server, raw_request("two_per_two_seconds"))
    status = denied.statuses[0]
    assert denied.overall_code == status.code == Code.OVER_LIMIT
    assert 1300 <= status.duration_until_reset.ToMilliseconds() <= 1500  # oldest leaves first
    assert (status.current_limit.requests_per_unit, status.current_limit.name) == (2, "2 per 2s")
    assert status.current_limit.unit == Code.RateLimit.UNKNOWN
    await asyncio.sleep(status.duration_until_reset.ToMilliseconds() / 1000 + 0.05)
    assert (await raw_call(server, raw_request("two_per_two_seconds"))).overall_code == Code.OK


async def test_unlimited_descriptor_and_unknown_domain_are_ok(
    server: RateLimitServer, client: RateLimitClient
) -> None:
    decision = await client.should_rate_limit(one("unlimited") + one("not_in_rules"))
    assert decision == RateLimitDecision(True, 0, None, None)
    unknown = RateLimitClient(f"127.0.0.1:{server.port}", "no-such-domain", 2.0)
    try:
        decision = await unknown.should_rate_limit(one("three_per_minute"))
    finally:
        await unknown.close()
    assert decision == RateLimitDecision(True, 0, None, None)


@pytest.mark.security(stride="T", asvs=("V2.2",))
async def test_invalid_input_is_invalid_argument(
    server: RateLimitServer, client: RateLimitClient
) -> None:
    with pytest.raises(RateLimitUnavailable) as info:
        await client.should_rate_limit([])
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    for message, fault in [
        (raw_request("k", domain=""), "domain"),
        (raw_request("three_per_minute", "x" * 10_000), "entry values"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as raw:
            await raw_call(server, message)
        assert raw.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert fault in (raw.value.details() or "")


@pytest.mark.security(stride="T", asvs=("V2.2",))
async def test_client_counts_hostile_long_values_instead_of_failing(
    client: RateLimitClient,
) -> None:
    hostile, other = "x" * 10_000, "x" * 9_999 + "y"
    for remaining in (2, 1, 0):
        assert (await client.should_rate_limit(one("three_per_minute", hostile))).remaining == (
            remaining
        )
    assert not (await client.should_rate_limit(one("three_per_minute", hostile))).allowed
    assert (await client.should_rate_limit(one("three_per_minute", other))).allowed


@pytest.mark.security(stride="D", asvs=("V13",))
async def test_health_is_serving(server: RateLimitServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", RLS_SERVICE):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.security(stride="R", asvs=("V16.2",))
async def test_one_access_log_line_per_call(
    client: RateLimitClient, log_stream: io.StringIO
) -> None:
    log_stream.seek(0)
    log_stream.truncate()
    await client.should_rate_limit(one("three_per_minute"))
    with pytest.raises(RateLimitUnavailable):
        await client.should_rate_limit([])
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    access = [line for line in lines if line["event"] == "grpc_call"]
    assert [(line["code"], line["domain"]) for line in access] == [
        ("OK", "test"),
        ("INVALID_ARGUMENT", "test"),
    ]
    assert access[0]["method"] == f"/{RLS_SERVICE}/ShouldRateLimit"
    assert access[0]["latency_ms"] >= 0
    assert access[0]["service"] == "ratelimit"


@pytest.mark.security(stride="D", asvs=("V16.5",))
async def test_redis_unreachable_is_answered_fast(
    start_server: ServerFactory, free_port: int
) -> None:
    """A rule without ``failure_mode`` answers by the default (allow), within the deadline."""
    server = await start_server(
        REDIS_URL=f"redis://127.0.0.1:{free_port}/0", REDIS_TIMEOUT_SECONDS="0.05"
    )
    rl_client = RateLimitClient(f"127.0.0.1:{server.port}", "test", timeout_seconds=2.0)
    try:
        for _ in range(5):  # more than the rule's limit: nothing is counted, all allowed
            started = time.monotonic()
            decision = await rl_client.should_rate_limit(one("three_per_minute"))
            assert decision.allowed
            assert time.monotonic() - started < 1.0
    finally:
        await rl_client.close()


@pytest.mark.security(stride="D", asvs=("V16.5",))
async def test_redis_that_never_answers_is_answered_fast(start_server: ServerFactory) -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept, read and never answer
        writer.close()

    blackhole = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = blackhole.sockets[0].getsockname()[1]
    try:
        server = await start_server(
            REDIS_URL=f"redis://127.0.0.1:{port}/0", REDIS_TIMEOUT_SECONDS="0.05"
        )
        rl_client = RateLimitClient(f"127.0.0.1:{server.port}", "test", timeout_seconds=2.0)
        try:
            started = time.monotonic()
            assert (await rl_client.should_rate_limit(one("three_per_minute"))).allowed
            assert time.monotonic() - started < 0.5
        finally:
            await rl_client.close()
    finally:
        blackhole.close()


@pytest.mark.security(stride="D", asvs=("V16.5",))
async def test_client_deadline_when_service_is_down(free_port: int) -> None:
    rl_client = RateLimitClient(f"127.0.0.1:{free_port}", "test", timeout_seconds=0.1)
    try:
        started = time.monotonic()
        with pytest.raises(RateLimitUnavailable):
            await rl_client.should_rate_limit(one("three_per_minute"))
        assert time.monotonic() - started < 1.0
    finally:
        await rl_client.close()


async def test_a_call_its_caller_gave_up_on_is_logged_cancelled_not_ok(
    start_server: ServerFactory, log_stream: io.StringIO
) -> None:
    """The caller's deadline passed while Redis hung: the call must not count as OK in the
    access line (and so in the gRPC metrics and alerts)."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept, read and never answer
        writer.close()

    blackhole = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = blackhole.sockets[0].getsockname()[1]
    try:
        server = await start_server(
            REDIS_URL=f"redis://127.0.0.1:{port}/0", REDIS_TIMEOUT_SECONDS="2"
        )
        rl_client = RateLimitClient(f"127.0.0.1:{server.port}", "test", timeout_seconds=0.1)
        log_stream.seek(0)
        log_stream.truncate()
        try:
            with pytest.raises(RateLimitUnavailable) as info:
                await rl_client.should_rate_limit(one("three_per_minute"))
            assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        finally:
            await rl_client.close()
        for _ in range(50):  # the server notices the cancellation shortly after
            lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
            access = [line for line in lines if line["event"] == "grpc_call"]
            if access:
                break
            await asyncio.sleep(0.05)
        assert [line["code"] for line in access] == ["CANCELLED"]
    finally:
        blackhole.close()
