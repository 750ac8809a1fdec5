"""Operator API (``bulwark.ratelimit.v1.RateLimitOperator``) over a real channel, reflection,
and the generated code's freshness."""

import asyncio
import filecmp
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from bulwark.common.ratelimit_client import RateLimitClient
from bulwark.ratelimit._generated.v1 import operator_pb2, operator_pb2_grpc
from bulwark.ratelimit.reflection import V1_SERVICE, V1ALPHA_SERVICE
from bulwark.ratelimit.server import OPERATOR_SERVICE, RLS_SERVICE, RateLimitServer

RULES = """
domains:
  - domain: test
    descriptors:
      - key: three_per_minute
        rate_limit: {requests: 3, window_seconds: 60}
      - key: three_per_second
        rate_limit: {requests: 3, window_seconds: 1}
      - key: one_per_minute
        rate_limit: {requests: 1, window_seconds: 60}
      - key: failures
        backoff: {failures: 2, window_seconds: 60, block_seconds: 30, max_block_seconds: 120}
      - key: unlimited
"""
ROOT = Path(__file__).resolve().parents[3]
GENERATED = ROOT / "services/ratelimit/src/bulwark/ratelimit/_generated"


def descriptor(key: str, value: str = "v") -> Any:
    return operator_pb2.Descriptor(entries=[operator_pb2.Entry(key=key, value=value)])


@pytest.fixture
def rules_path(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


@pytest.fixture
async def operator(server: RateLimitServer) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield operator_pb2_grpc.RateLimitOperatorStub(channel)


@pytest.mark.security(stride="T", asvs=("V2.4",))
async def test_get_usage_reads_without_counting(operator: Any, client: RateLimitClient) -> None:
    request = operator_pb2.GetUsageRequest(domain="test", descriptor=descriptor("three_per_minute"))
    fresh = await operator.GetUsage(request, timeout=2)
    assert (fresh.limited, fresh.used, fresh.remaining, fresh.blocked) == (True, 0, 3, False)
    assert (fresh.limit.requests, fresh.limit.window_seconds) == (3, 60)
    for _ in range(2):
        await client.should_rate_limit([[("three_per_minute", "v")]])
    for _ in range(3):  # reading never counts
        usage = await operator.GetUsage(request, timeout=2)
        assert (usage.used, usage.remaining, usage.blocked) == (2, 1, False)
        assert 58_000 < usage.reset_ms <= 60_000
    await client.should_rate_limit([[("three_per_minute", "v")]])
    full = await operator.GetUsage(request, timeout=2)
    assert (full.used, full.remaining, full.blocked, full.key) == (3, 0, True, usage.key)


async def test_get_usage_of_an_unlimited_descriptor(operator: Any) -> None:
    usage = await operator.GetUsage(
        operator_pb2.GetUsageRequest(domain="test", descriptor=descriptor("unlimited")), timeout=2
    )
    assert not usage.limited
    assert not usage.HasField("limit")


@pytest.mark.security(stride="E", asvs=("V2.4",))
async def test_list_and_clear_a_block(operator: Any, client: RateLimitClient) -> None:
    entries = [[("one_per_minute", "blocked-user")]]
    assert (await client.should_rate_limit(entries)).allowed
    assert not (await client.should_rate_limit(entries)).allowed
    usage = await operator.GetUsage(
        operator_pb2.GetUsageRequest(
            domain="test", descriptor=descriptor("one_per_minute", "blocked-user")
        ),
        timeout=2,
    )
    blocks = await _eventually_blocks(operator, 1)
    (block,) = blocks
    assert block.key == usage.key
    assert (block.limit.requests, block.limit.window_seconds, block.used) == (1, 60, 1)
    assert 58_000 < block.reset_ms <= 60_000

    cleared = await operator.ClearBlock(operator_pb2.ClearBlockRequest(key=block.key), timeout=2)
    assert (cleared.key, cleared.cleared) == (block.key, True)
    assert await _blocks(operator) == []
    assert (await client.should_rate_limit(entries)).allowed  # this replica's cache forgot it too
    again = await operator.ClearBlock(operator_pb2.ClearBlockRequest(key=block.key), timeout=2)
    assert (again.cleared, (await client.should_rate_limit(entries)).allowed) == (True, True)


@pytest.mark.security(stride="R", asvs=("V2.4",))
async def test_backoff_blocks_are_listed(operator: Any, client: RateLimitClient) -> None:
    entries = [[("failures", "mallory@example.com")]]
    assert (await client.should_rate_limit(entries)).allowed  # first failure
    assert (await client.should_rate_limit(entries)).allowed  # second: the last one allowed
    assert not (await client.should_rate_limit(entries)).allowed  # third: a 30 s block starts
    (block,) = await _eventually_blocks(operator, 1)
    assert (block.limit.requests, block.limit.window_seconds) == (2, 60)
    assert 28_000 < block.reset_ms <= 30_000
    assert (await operator.ClearBlock(operator_pb2.ClearBlockRequest(key=block.key))).cleared
    assert await _blocks(operator) == []
    assert (await client.should_rate_limit(entries, hits_addend=0)).allowed


@pytest.mark.security(stride="E", asvs=("V2.4",))
async def test_clear_key_by_descriptor(operator: Any, client: RateLimitClient) -> None:
    entries = [[("three_per_minute", "Someone")]]
    for _ in range(3):
        await client.should_rate_limit(entries)
    assert not (await client.should_rate_limit(entries)).allowed
    request = operator_pb2.ClearKeyRequest(
        domain="test", descriptor=descriptor("three_per_minute", "Someone")
    )
    assert (await operator.ClearKey(request, timeout=2)).cleared
    assert not (await operator.ClearKey(request, timeout=2)).cleared
    assert (await client.should_rate_limit(entries)).remaining == 2


@pytest.mark.security(stride="R", asvs=("V2.4",))
async def test_listed_blocks_that_expired_are_not_listed(
    operator: Any, client: RateLimitClient
) -> None:
    entries = [[("three_per_second", "short")]]
    for _ in range(4):
        await client.should_rate_limit(entries)
    await _eventually_blocks(operator, 1)
    await asyncio.sleep(1.1)
    assert await _blocks(operator) == []


@pytest.mark.security(stride="E", asvs=("V8",))
@pytest.mark.parametrize(
    "request_",
    [
        operator_pb2.ClearBlockRequest(key="not-our-prefix:x"),
        operator_pb2.ClearBlockRequest(key=""),
    ],
)
async def test_clear_block_refuses_foreign_keys(operator: Any, request_: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await operator.ClearBlock(request_, timeout=2)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.security(stride="T", asvs=("V2.2",))
async def test_invalid_descriptor_is_invalid_argument(operator: Any) -> None:
    for request in (
        operator_pb2.GetUsageRequest(domain="test", descriptor=operator_pb2.Descriptor()),
        operator_pb2.GetUsageRequest(domain="", descriptor=descriptor("k")),
        operator_pb2.ClearKeyRequest(domain="test", descriptor=descriptor("k", "x" * 2000)),
    ):
        method = (
            operator.GetUsage
            if isinstance(request, operator_pb2.GetUsageRequest)
            else (operator.ClearKey)
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await method(request, timeout=2)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.security(stride="I", asvs=("V13",))
async def test_reflection_lists_both_services(server: RateLimitServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=OPERATOR_SERVICE),
        ]
        answers = [answer async for answer in stub.ServerReflectionInfo(iter(requests))]
    names = {service.name for service in answers[0].list_services_response.service}
    assert {RLS_SERVICE, OPERATOR_SERVICE} <= names
    assert answers[1].file_descriptor_response.file_descriptor_proto  # grpcurl can describe it


@pytest.mark.security(stride="I", asvs=("V13",))
@pytest.mark.parametrize("service", [V1_SERVICE, V1ALPHA_SERVICE])
async def test_reflection_answers_under_v1_and_v1alpha(
    server: RateLimitServer, service: str
) -> None:
    """grpcurl and Postman ask ``grpc.reflection.v1`` first; older clients v1alpha. The
    messages are the same on the wire, so v1alpha's classes speak both."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        info = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=V1_SERVICE),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=RLS_SERVICE),
        ]
        answers = [answer async for answer in info(iter(requests))]
    names = {entry.name for entry in answers[0].list_services_response.service}
    assert {RLS_SERVICE, OPERATOR_SERVICE, V1_SERVICE, V1ALPHA_SERVICE} <= names
    (v1_file, *_) = answers[1].file_descriptor_response.file_descriptor_proto
    described = descriptor_pb2.FileDescriptorProto.FromString(v1_file)
    assert (described.package, described.service[0].name) == (
        "grpc.reflection.v1",
        "ServerReflection",
    )
    assert answers[2].file_descriptor_response.file_descriptor_proto


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    """The committed ``_generated`` code is what ``make proto`` makes from ``proto/``."""
    pytest.importorskip("grpc_tools")
    subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(ROOT / "proto/compile.py"), str(tmp_path)], check=True, timeout=60
    )
    fresh = tmp_path / "bulwark/ratelimit/_generated"
    names = _generated_files(fresh)
    committed = _generated_files(GENERATED)
    assert names == committed, "run `make proto`"
    for name in names:
        assert filecmp.cmp(fresh / name, GENERATED / name, shallow=False), f"{name}: make proto"


def _generated_files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*_pb2*") if p.suffix in {".py", ".pyi"})


async def _blocks(operator: Any) -> list[Any]:
    return list((await operator.ListBlocks(operator_pb2.ListBlocksRequest(), timeout=2)).blocks)


async def _eventually_blocks(operator: Any, count: int) -> list[Any]:
    """The block index is written off the request path: wait briefly for it."""
    for _ in range(50):
        blocks = await _blocks(operator)
        if len(blocks) >= count:
            return blocks
        await asyncio.sleep(0.02)
    return blocks
