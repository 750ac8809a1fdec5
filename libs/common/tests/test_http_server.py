"""The HTTP server's limits, driven through a fake transport (no sockets): heads over the
limits, timeouts, framing errors, chunk sizes, pipelining, and one access line for every
request, refused or not (issue 9). tests/integration/test_http_framing.py does the same
against the real services."""

from __future__ import annotations

import asyncio
import inspect
import io
import json
from typing import Any

import pytest
import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from bulwark.common.http import (
    HttpLimits,
    RequestContextMiddleware,
    parse_trusted_proxies,
)
from bulwark.common.http_server import GuardedHttpToolsProtocol, protocol_class
from bulwark.common.logging import configure_logging

pytestmark = pytest.mark.security(stride="D", asvs=("V4.2", "V15.2"))

LIMITS = HttpLimits(max_header_bytes=16 * 1024, max_headers=100, header_timeout=5, body_timeout=5)
PEER = ("203.0.113.7", 50123)


class FakeTransport(asyncio.Transport):
    """Records what the protocol writes and whether it half-closed or closed."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.eof = False
        self.closed = False
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": PEER, "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.eof, "written after write_eof"
        assert not self.closed, "written after close"
        self.written += data

    def write_eof(self) -> None:
        self.eof = True

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    @property
    def finished(self) -> bool:
        """Half-closed (answer sent, lingering) or closed."""
        return self.eof or self.closed

    def statuses(self) -> list[int]:
        """Status codes of the responses written, in order."""
        return _statuses(bytes(self.written))


def _statuses(written: bytes) -> list[int]:
    statuses = []
    position = written.find(b"HTTP/1.1 ")
    while position >= 0:
        statuses.append(int(written[position + 9 : position + 12]))
        position = written.find(b"HTTP/1.1 ", position + 12)
    return statuses


class Echo:
    """An ASGI app that reads the whole body and answers 200 with it; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls += 1
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class Server:
    """One connection to a `GuardedHttpToolsProtocol` serving `Echo` behind the middleware."""

    def __init__(self, limits: HttpLimits = LIMITS, trusted_proxies: str = "") -> None:
        self.app = Echo()
        self.log = io.StringIO()
        configure_logging("test", stream=self.log)
        proxies = parse_trusted_proxies(trusted_proxies)
        config = Config(
            app=RequestContextMiddleware(self.app, proxies),  # type: ignore[arg-type]
            lifespan="off",
            log_config=None,
            proxy_headers=False,
            ws="none",
        )
        config.load()
        self.protocol = protocol_class(limits, proxies)(
            config=config,
            server_state=ServerState(),
            app_state={},
            _loop=asyncio.get_running_loop(),
        )
        self.fed: list[int] = []
        self.protocol.parser = _CountingParser(self.protocol.parser, self.fed)  # type: ignore[assignment]
        self.transport = FakeTransport()
        self.protocol.connection_made(self.transport)

    async def send(self, *parts: bytes) -> None:
        for part in parts:
            self.protocol.data_received(part)
        await settle()

    def lines(self) -> list[dict[str, Any]]:
        """The access lines written so far."""
        lines = [json.loads(raw) for raw in self.log.getvalue().splitlines()]
        return [line for line in lines if line["event"] == "request"]

    def other_lines(self) -> list[dict[str, Any]]:
        lines = [json.loads(raw) for raw in self.log.getvalue().splitlines()]
        return [line for line in lines if line["event"] != "request"]


class _CountingParser:
    """The real parser, counting the bytes fed to it."""

    def __init__(self, parser: Any, fed: list[int]) -> None:
        self._parser = parser
        self._fed = fed

    def feed_data(self, data: bytes) -> None:
        self._fed.append(len(data))
        self._parser.feed_data(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def get(extra: bytes = b"", target: bytes = b"/") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n"


def post(body: bytes, extra: bytes = b"") -> bytes:
    length = b"Content-Length: %d\r\n" % len(body)
    return b"POST / HTTP/1.1\r\nHost: x\r\n" + length + extra + b"\r\n" + body


CHUNKED = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def assert_refused_line(line: dict[str, Any], status: int, reason: str, written: bytes) -> None:
    """A refusal's access line: request id as answered, the peer, the reason."""
    assert line["status"] == status
    assert line["refused"] == reason
    assert line["client_ip"] == PEER[0]
    assert line["request_id"]
    assert f"x-request-id: {line['request_id']}".encode() in written


# uvicorn internals ------------------------------------------------------------------------


def test_the_uvicorn_we_subclass_is_the_one_we_know() -> None:
    """`GuardedHttpToolsProtocol` overrides and reads uvicorn internals: a new uvicorn must
    be checked against it (then move this pin with the one in pyproject.toml)."""
    assert uvicorn.__version__.startswith("0.54.")
    for name in (
        "data_received",
        "on_message_begin",
        "on_headers_complete",
        "on_body",
        "on_message_complete",
        "on_response_complete",
        "_start_asgi_task",
        "_unset_keepalive_if_required",
        "connection_made",
        "connection_lost",
    ):
        assert callable(getattr(HttpToolsProtocol, name)), name
        assert name in GuardedHttpToolsProtocol.__dict__ or name.startswith("_unset"), name
    cycle_flags = {
        "response_started",
        "response_complete",
        "disconnected",
        "keep_alive",
        "message_event",
        "more_body",
    }
    assert cycle_flags <= set(RequestResponseCycle.__init__.__code__.co_names)
    # The method of a refused request is read from the parser once the target has started.
    assert "self.url += url" in inspect.getsource(HttpToolsProtocol.on_url)
    assert 'self.url = b""' in inspect.getsource(HttpToolsProtocol.on_message_begin)


async def test_protocol_attributes_we_read_exist() -> None:
    server = Server()
    protocol = server.protocol
    for name in ("parser", "transport", "flow", "pipeline", "cycle", "client", "loop"):
        assert hasattr(protocol, name), name
    assert protocol.client == PEER
    assert hasattr(protocol.flow, "read_paused")
    assert protocol.timeout_keep_alive_task is None
    assert isinstance(protocol.server_state.default_headers, list)


# Well-formed requests ----------------------------------------------------------------------


async def test_a_well_formed_request_is_served_with_one_line_and_kept_alive() -> None:
    server = Server()
    await server.send(get(b"User-Agent: App/1.0\r\n"), post(b"x" * 70_000))
    assert server.transport.statuses() == [200, 200]
    assert not server.transport.finished
    assert [line["status"] for line in server.lines()] == [200, 200]
    assert "refused" not in server.lines()[0]


async def test_a_head_just_under_the_limits_is_served() -> None:
    server = Server()
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(98))  # + Host + X-Pad: 100
    padding = b"X-Pad: " + b"p" * (16 * 1024 - 2000) + b"\r\n"
    await server.send(get(headers + padding))
    assert server.transport.statuses() == [200]


async def test_a_head_that_follows_a_body_in_the_same_read_is_measured_exactly() -> None:
    server = Server()
    await server.send(post(b"y" * 60_000) + get(b"X-A: a\r\n"))
    assert server.transport.statuses() == [200, 200]
    server = Server()
    await server.send(post(b"y" * 100) + get(b"X-Big: " + b"b" * 17_000 + b"\r\n"))
    assert server.transport.statuses() == [200, 431]


# Heads over the limits ---------------------------------------------------------------------


async def test_a_1_mib_header_is_431_after_parsing_at_most_the_limit() -> None:
    server = Server()
    await server.send(get(b"User-Agent: " + b"a" * (1024 * 1024) + b"\r\n"))
    assert server.transport.statuses() == [431]
    assert server.transport.eof
    assert server.app.calls == 0
    assert sum(server.fed) <= LIMITS.max_header_bytes
    (line,) = server.lines()
    assert_refused_line(line, 431, "header_too_large", bytes(server.transport.written))
    assert (line["method"], line["route"]) == ("GET", "<unparsed>")


async def test_a_large_header_sent_slowly_is_refused_at_the_limit() -> None:
    server = Server()
    await server.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    for _ in range(40):
        await server.send(b"z" * 1024)
    assert server.transport.statuses() == [431]
    assert sum(server.fed) <= LIMITS.max_header_bytes
    assert len(server.lines()) == 1


async def test_101_headers_are_431_and_100_are_served() -> None:
    server = Server()
    await server.send(get(b"".join(b"X-H%d: v\r\n" % i for i in range(100))))
    assert server.transport.statuses() == [431]
    (line,) = server.lines()
    assert_refused_line(line, 431, "too_many_headers", bytes(server.transport.written))
    server = Server()
    await server.send(get(b"".join(b"X-H%d: v\r\n" % i for i in range(99))))
    assert server.transport.statuses() == [200]


async def test_a_long_target_is_414() -> None:
    server = Server()
    await server.send(get(target=b"/" + b"a" * 20_000))
    assert server.transport.statuses() == [414]
    assert server.lines()[0]["refused"] == "uri_too_long"


# Parse errors --------------------------------------------------------------------------------

MALFORMED = {
    "chunk size overflow": CHUNKED + b"1" + b"0" * 16 + b"\r\nabc\r\n0\r\n\r\n",
    "chunk size not hex": CHUNKED + b"zz\r\nabc\r\n0\r\n\r\n",
    "chunk not terminated": CHUNKED + b"3\r\nabcXX0\r\n\r\n",
    "negative content-length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "content-length overflow": b"POST / HTTP/1.1\r\nContent-Length: 9" + b"9" * 22 + b"\r\n\r\n",
    "content-length twice": b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "content-length with sign": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\nab",
    "transfer-encoding and content-length": (
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "chunked not last": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "unknown method": b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n",
    "control byte in a header": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
    "nul in a header": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "obsolete line folding": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "bare lf": b"GET / HTTP/1.1\nHost: x\n\n",
    "http/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "tls hello": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
async def test_malformed_framing_is_400_closed_and_logged_once(kind: str) -> None:
    server = Server()
    await server.send(MALFORMED[kind])
    assert server.transport.statuses() == [400]
    assert server.transport.eof
    (line,) = server.lines()
    assert_refused_line(line, 400, "invalid_request", bytes(server.transport.written))
    assert not server.other_lines()  # no uvicorn warning without request id
    if kind == "unknown method":
        assert line["method"] is None  # never parsed
    elif kind == "control byte in a header":
        assert line["method"] == "GET"
    await server.send(get())  # the connection reads nothing more
    assert server.transport.statuses() == [400]


async def test_a_framing_error_in_a_body_the_app_is_reading_is_one_400_and_one_line() -> None:
    server = Server()
    await server.send(CHUNKED + b"2\r\nab\r\n")
    assert server.app.calls == 1
    await server.send(b"FFFFFFFFFFFFFFFFFFFF\r\n")  # beyond 64 bits
    assert server.transport.statuses() == [400]
    (line,) = server.lines()
    assert_refused_line(line, 400, "invalid_request", bytes(server.transport.written))
    assert line["route"] == "<unmatched>"  # the app's line (Echo has no routes)
    assert line["request_bytes"] == 2
    assert not server.other_lines()


@pytest.mark.security(stride="R", asvs=("V16.2",))
async def test_a_refused_request_behind_a_trusted_proxy_logs_the_client() -> None:
    server = Server(trusted_proxies="203.0.113.0/24")
    await server.send(b"GET / HTTP/1.1\r\nX-Forwarded-For: 198.51.100.4\r\nX-A: \x01\r\n\r\n")
    assert server.lines()[0]["client_ip"] == "198.51.100.4"


async def test_a_pipelined_malformed_request_is_answered_after_the_one_before() -> None:
    server = Server()
    await server.send(get() + MALFORMED["control byte in a header"])
    assert server.transport.statuses() == [200, 400]
    # The refusal is logged when decided, the served request when its app returns.
    assert sorted(line["status"] for line in server.lines()) == [200, 400]


# Chunk sizes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "parts",
    [
        [CHUNKED + b"7FFFFFFFFFFFFFFF\r\nabc"],  # 2^63: it would wait for its data
        [CHUNKED + b"FFFFFFFFFFFFFFFF\r\n"],
        [CHUNKED, b"FFFFFFFF", b"FFFFFFFF\r\n"],  # the size line across reads
        [CHUNKED + b"2\r\nab\r\n", b"100001\r\n"],  # a later chunk
    ],
)
async def test_a_chunk_larger_than_any_body_is_413_at_once(parts: list[bytes]) -> None:
    server = Server()
    await server.send(*parts)
    assert server.transport.statuses() == [413]
    assert server.transport.eof
    (line,) = server.lines()
    assert_refused_line(line, 413, "chunk_too_large", bytes(server.transport.written))


async def test_a_chunk_line_longer_than_the_limit_is_400() -> None:
    server = Server()
    await server.send(CHUNKED + b"5;" + b"e" * 1000, b"e" * 2000 + b"\r\nhello")
    assert server.transport.statuses() == [400]
    assert server.lines()[0]["refused"] == "chunk_line_too_long"


async def test_well_formed_chunked_bodies_are_served() -> None:
    server = Server()
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    await server.send(CHUNKED + body[:9], body[9:20], body[20:])
    assert server.transport.statuses() == [200]
    assert server.transport.written.endswith(b"hello world")
    await server.send(CHUNKED + b"100000\r\n" + b"c" * 0x100000 + b"\r\n0\r\n\r\n")
    assert server.transport.statuses() == [200, 200]


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
    ],
)
async def test_an_http_1_1_request_needs_exactly_one_host(head: bytes) -> None:
    """RFC 9112 §3.2: no Host in HTTP/1.1, or more than one Host, is a 400."""
    server = Server()
    await server.send(head)
    assert server.transport.statuses() == [400]
    (line,) = server.lines()
    assert line["refused"] == "invalid_host"


async def test_an_http_1_0_request_may_omit_host() -> None:
    server = Server()
    await server.send(b"GET / HTTP/1.0\r\n\r\n")
    assert server.transport.statuses() == [200]


async def test_a_trailer_field_is_refused_never_added_to_the_headers() -> None:
    """uvicorn appends trailer fields to the request's headers, where the application would
    read an ``Authorization`` no proxy in front saw: a trailer is a 400."""
    server = Server()
    await server.send(CHUNKED + b"2\r\n{}\r\n0\r\nAuthorization: Bearer smuggled\r\n\r\n")
    assert server.transport.statuses() == [400]
    (line,) = server.lines()
    assert line["refused"] == "trailer_refused"


async def test_the_bytes_after_a_head_are_bounded() -> None:
    """A body phase past 1 MiB (a trailer that never ends, say) is a 413, read no further."""
    server = Server()
    await server.send(CHUNKED + b"2\r\n{}\r\n0\r\nX-T: ", *([b"a" * 65536] * 20))
    assert server.transport.statuses() == [413]
    (line,) = server.lines()
    assert line["refused"] == "body_too_large"


# Timeouts ----------------------------------------------------------------------------------

FAST = HttpLimits(header_timeout=0.2, body_timeout=0.2)
LATER = 0.5  # seconds: past those timeouts, whatever the load on the machine


async def test_a_head_never_finished_is_408_and_closed_within_the_timeout() -> None:
    server = Server(FAST)
    await server.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert not server.transport.finished
    await asyncio.sleep(LATER)
    assert server.transport.statuses() == [408]
    assert server.transport.eof
    (line,) = server.lines()
    assert_refused_line(line, 408, "header_timeout", bytes(server.transport.written))
    assert 200 <= line["latency_ms"] < 1000 * LATER


async def test_a_head_timeout_is_not_extended_by_bytes_that_trickle_in() -> None:
    server = Server(FAST)
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not server.transport.finished and loop.time() - started < 2:
        await server.send(b"\r\n")  # empty lines before a request line: no request yet
        await asyncio.sleep(0.01)
    assert server.transport.closed
    assert loop.time() - started < LATER
    assert server.transport.statuses() == []
    assert server.lines() == []


async def test_an_idle_connection_is_closed_without_a_line() -> None:
    server = Server(FAST)
    await asyncio.sleep(LATER)
    assert server.transport.closed
    assert server.lines() == []


async def test_a_keep_alive_connection_whose_next_head_stalls_is_408() -> None:
    server = Server(FAST)
    await server.send(get())
    await server.send(b"GET / HTTP/1.1\r\nHo")
    await asyncio.sleep(LATER)
    assert server.transport.statuses() == [200, 408]
    assert sorted(str(line.get("refused")) for line in server.lines()) == [
        "None",
        "header_timeout",
    ]


async def test_a_body_that_stalls_is_408_and_the_app_line_says_so() -> None:
    server = Server(FAST)
    await server.send(post(b"0123456789")[:-8])
    assert server.app.calls == 1
    await asyncio.sleep(LATER)
    assert server.transport.statuses() == [408]
    (line,) = server.lines()
    assert_refused_line(line, 408, "body_timeout", bytes(server.transport.written))
    assert line["request_bytes"] == 2
    assert not server.other_lines()


# Upgrades ------------------------------------------------------------------------------------


async def test_an_upgrade_request_is_served_and_the_connection_closed() -> None:
    server = Server()
    upgrade = get(b"Connection: Upgrade\r\nUpgrade: h2c\r\n")
    await server.send(upgrade + get(), get())
    assert server.transport.statuses() == [200]
    assert server.transport.closed
    assert len(server.lines()) == 1


def test_protocol_class_binds_settings() -> None:
    bound = protocol_class(FAST, parse_trusted_proxies("10.0.0.0/8"))
    assert issubclass(bound, GuardedHttpToolsProtocol)
    assert bound.limits is FAST
    assert [str(n) for n in bound.trusted_proxies] == ["10.0.0.0/8"]
