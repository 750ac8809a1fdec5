"""A ``ShouldRateLimit`` call its caller gives up on (deadline) while the Redis call is in
flight: one CANCELLED access line at info, nothing at error, and the Redis connection back in
the pool or closed, never left holding an answer nobody reads.

Real server on port 0, real Redis (``TEST_REDIS_URL``) behind `Relay`, a TCP relay that can
hold Redis's replies back: the test decides when the answer reaches the server.
"""

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from bulwark.ratelimit.server import RateLimitServer

ServerFactory = Callable[..., Awaitable[RateLimitServer]]
DEADLINE = 1.0  # the caller's, in seconds


class Relay:
    """Relays TCP connections to Redis; while ``hold`` is set, Redis's replies are kept in
    ``held`` (and ``replied`` is set) instead of being passed on."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.hold = False
        self.held: list[tuple[asyncio.StreamWriter, bytes]] = []
        self.replied = asyncio.Event()
        self.accepted = 0
        self.closed_by_client = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Listen on 127.0.0.1; returns the port."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def release(self) -> None:
        """Pass the held replies on now (``transport.write`` sends at once)."""
        for writer, data in self.held:
            writer.write(data)
        self.held.clear()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        redis_r, redis_w = await asyncio.open_connection(*self._target)
        upstream = asyncio.create_task(self._pump(client_r, redis_w))
        self._tasks.add(upstream)
        try:
            while data := await redis_r.read(65536):
                if self.hold:
                    self.held.append((client_w, data))
                    self.replied.set()
                else:
                    client_w.write(data)
        finally:
            upstream.cancel()
            client_w.close()
            redis_w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
        self.closed_by_client += 1
        writer.close()


@pytest.fixture
async def relay(redis_url: str) -> AsyncIterator[Relay]:
    target = urlsplit(redis_url)
    relay = Relay(target.hostname or "127.0.0.1", target.port or 6379)
    yield relay
    await relay.close()


async def relayed_server(start_server: ServerFactory, relay: Relay, redis_url: str) -> Any:
    port = await relay.start()
    database = urlsplit(redis_url).path or "/0"
    # Long Redis timeouts: only the caller's deadline may end the call.
    return await start_server(
        REDIS_URL=f"redis://127.0.0.1:{port}{database}", REDIS_TIMEOUT_SECONDS="5"
    )


def request() -> Any:
    message = rls_pb2.RateLimitRequest(domain="test")
    message.descriptors.add().entries.append(
        ratelimit_pb2.RateLimitDescriptor.Entry(key="three_per_minute", value="v")
    )
    return message


async def logged_after(log_stream: io.StringIO, server: RateLimitServer) -> list[dict[str, Any]]:
    """The lines logged since the stream was cleared, once the call's access line is there
    (the server notices a cancellation shortly after the caller)."""
    for _ in range(100):
        lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
        if any(line["event"] == "grpc_call" for line in lines):
            await asyncio.sleep(0.1)  # anything gRPC would log after the access line
            return [json.loads(line) for line in log_stream.getvalue().splitlines()]
        await asyncio.sleep(0.05)
    raise AssertionError("no access line")


def assert_cancelled_quietly(lines: list[dict[str, Any]]) -> None:
    access = [line for line in lines if line["event"] == "grpc_call"]
    assert [(line["code"], line["level"]) for line in access] == [("CANCELLED", "info")], lines
    assert access[0]["response_bytes"] == 0  # nothing was sent
    loud = [line for line in lines if line["level"] not in ("debug", "info")]
    assert loud == [], loud  # e.g. gRPC's ExecuteBatchError traceback at error
    assert not any("exception" in line for line in lines), lines


@pytest.mark.parametrize("scene", ["answer-after-deadline", "held-answer", "caller-gone"])
async def test_a_call_cancelled_while_redis_answers_is_one_quiet_cancelled_line(
    start_server: ServerFactory,
    relay: Relay,
    redis_url: str,
    log_stream: io.StringIO,
    scene: str,
) -> None:
    """``answer-after-deadline``: Redis answers just before the caller's deadline, but the
    event loop is busy (a stall: CPU starvation, a long collection) until after it. The
    handler then ends after the deadline, before gRPC has told it the call is cancelled: it
    used to be logged OK, and gRPC's attempt to send the answer on a call its core had
    cancelled was logged at error with an ExecuteBatchError traceback.
    ``held-answer``: Redis answers after the deadline; the handler is cancelled while it
    waits, and redis-py closes the connection that still owes the answer.
    ``caller-gone``: the same, the caller cancelling its call instead of a deadline.
    """
    server = await relayed_server(start_server, relay, redis_url)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        await stub.ShouldRateLimit(request(), timeout=5)  # connects, loads the script
        assert relay.accepted == 1
        relay.hold = True
        log_stream.seek(0)
        log_stream.truncate()
        sent = time.monotonic()
        call = stub.ShouldRateLimit(request(), timeout=DEADLINE)
        await asyncio.wait_for(relay.replied.wait(), 5)  # Redis has answered the server
        assert time.monotonic() - sent < DEADLINE / 2, "too slow a machine to set the scene"
        if scene == "answer-after-deadline":
            relay.release()  # the answer reaches the server's socket at once ...
            # ... but its event loop (this one) is busy until after the deadline.
            time.sleep(DEADLINE + 0.2)  # noqa: ASYNC251 - the stall is the point
        if scene == "caller-gone":
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
        else:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert_cancelled_quietly(await logged_after(log_stream, server))

        relay.hold = False
        relay.release()  # a late answer, to a connection now closed
        reply = await stub.ShouldRateLimit(request(), timeout=5)
        assert reply.overall_code == rls_pb2.RateLimitResponse.OK
        if scene == "answer-after-deadline":  # the answer was read: the connection went
            assert (relay.accepted, relay.closed_by_client) == (1, 0)  # back to the pool
        else:  # the connection that owed an answer was closed, not put back
            assert (relay.accepted, relay.closed_by_client) == (2, 1)
