"""Client address resolution behind trusted proxies, and the middleware's use of it."""

import asyncio
import io
import json
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from bulwark.common.http import (
    HttpLimits,
    Message,
    RequestContextMiddleware,
    client_ip,
    parse_trusted_proxies,
    resolve_client_ip,
)
from bulwark.common.logging import configure_logging

PROXIES = parse_trusted_proxies("10.0.0.0/8, 127.0.0.1 ::1")


def test_trusted_proxies_parse_addresses_and_networks() -> None:
    assert [str(n) for n in PROXIES] == ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]
    assert parse_trusted_proxies("") == ()
    with pytest.raises(ValueError, match="not-an-ip"):
        parse_trusted_proxies("10.0.0.1, not-an-ip")
    with pytest.raises(ValueError, match="host bits"):
        parse_trusted_proxies("10.0.0.1/8")


@pytest.mark.security(stride="S", asvs=("V4.1",))
def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert resolve_client_ip("127.0.0.1", ["203.0.113.9"], ()) == "127.0.0.1"
    assert resolve_client_ip(None, ["203.0.113.9"], PROXIES) is None


@pytest.mark.security(stride="S", asvs=("V4.1",))
def test_an_untrusted_peer_cannot_choose_its_address() -> None:
    assert resolve_client_ip("198.51.100.4", ["203.0.113.9"], PROXIES) == "198.51.100.4"


@pytest.mark.security(stride="S", asvs=("V4.1",))
def test_the_right_most_untrusted_hop_is_the_client() -> None:
    # The client claims 1.2.3.4; the first proxy appended the real peer, the second its own.
    xff = ["1.2.3.4, 203.0.113.7, 10.1.2.3"]
    assert resolve_client_ip("127.0.0.1", xff, PROXIES) == "203.0.113.7"


@pytest.mark.security(stride="S", asvs=("V4.1",))
def test_values_the_client_prepends_do_not_change_the_result() -> None:
    for spoof in ("", "6.6.6.6,", "10.0.0.1, 6.6.6.6,", "garbage, ", "1.1.1.1, 2.2.2.2,"):
        xff = [f"{spoof} 203.0.113.7"]
        assert resolve_client_ip("127.0.0.1", xff, PROXIES) == "203.0.113.7"


def test_several_header_fields_are_one_list_in_arrival_order() -> None:
    assert resolve_client_ip("10.0.0.2", ["6.6.6.6", "203.0.113.7, 10.0.0.9"], PROXIES) == (
        "203.0.113.7"
    )


@pytest.mark.security(stride="S", asvs=("V4.1",))
def test_malformed_hops_and_all_trusted_chains() -> None:
    # A malformed entry ends the walk: the last hop we could verify is the client.
    assert resolve_client_ip("127.0.0.1", ["junk, 10.0.0.7"], PROXIES) == "10.0.0.7"
    assert resolve_client_ip("127.0.0.1", ["203.0.113.7:443"], PROXIES) == "127.0.0.1"
    assert resolve_client_ip("127.0.0.1", ["10.0.0.3, 10.0.0.7"], PROXIES) == "10.0.0.3"
    assert resolve_client_ip("127.0.0.1", [], PROXIES) == "127.0.0.1"


def test_addresses_come_back_canonical() -> None:
    assert resolve_client_ip("::1", ["2001:DB8::0:1"], PROXIES) == "2001:db8::1"
    assert resolve_client_ip("::ffff:10.0.0.1", [" ::ffff:203.0.113.7 "], PROXIES) == (
        "203.0.113.7"
    )


async def test_middleware_resolves_once_and_adds_response_headers() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen["ip"] = client_ip(scope)
        scope["state"]["response_headers"][b"ratelimit"] = b'"x";r=1;t=2'
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "client": ("127.0.0.1", 5000),
        "headers": [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.7")],
    }
    await RequestContextMiddleware(app, PROXIES)(scope, receive, send)  # type: ignore[arg-type]
    assert seen["ip"] == "203.0.113.7"
    assert (b"ratelimit", b'"x";r=1;t=2') in sent[0]["headers"]
    untrusted = {**scope, "state": {}}
    await RequestContextMiddleware(app)(untrusted, receive, send)  # type: ignore[arg-type]
    assert seen["ip"] == "127.0.0.1"


async def test_access_line_has_the_span_of_the_response_and_checked_mobile_headers() -> None:
    stream = io.StringIO()
    configure_logging("test", stream=stream)
    tracer = TracerProvider().get_tracer("test")
    spans: list[Any] = []

    async def traced_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        # A tracing middleware inside ours: its span has ended when the access line is written.
        with tracer.start_as_current_span("GET /") as span:
            spans.append(span)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(_message: Message) -> None:
        return None

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "client": ("127.0.0.1", 5000),
        "headers": [
            (b"x-platform", b"iOS"),
            (b"x-app-version", b"1.4.2 \r\n{}"),
            (b"x-device-id", b"bad id\x85"),
            (b"user-agent", b"Bulwark/1.4.2 " + b"x" * 300),
        ],
    }
    await RequestContextMiddleware(traced_app)(scope, receive, send)  # type: ignore[arg-type]
    (line,) = [json.loads(raw) for raw in stream.getvalue().splitlines()]
    context = spans[0].get_span_context()
    assert line["event"] == "request"
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"
    assert line["platform"] == "ios"
    assert line["app_version"] == "invalid"
    assert line["device_id"] == "invalid"
    assert line["user_agent"] == "Bulwark/1.4.2 " + "x" * 242
    assert line["response_bytes"] == 2


async def _access_line(headers: list[tuple[bytes, bytes]]) -> tuple[dict[str, Any], str]:
    """The access line of one request with ``headers``, and the X-Request-ID answered."""
    stream = io.StringIO()
    configure_logging("test", stream=stream)
    answered: dict[str, str] = {}

    async def app(_scope: dict[str, Any], _receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            answered.update({k.decode(): v.decode() for k, v in message["headers"]})

    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}
    await RequestContextMiddleware(app)(scope, receive, send)  # type: ignore[arg-type]
    (line,) = [json.loads(raw) for raw in stream.getvalue().splitlines()]
    return line, answered["x-request-id"]


@pytest.mark.security(stride="I", asvs=("V16.2",))
@pytest.mark.parametrize(
    "secret", ["4012888888881881", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlX3g"]
)
async def test_a_secret_across_the_user_agent_cut_is_redacted_first(secret: str) -> None:
    """The User-Agent is cut to 256 characters after redaction, not before: cut first, a
    card number or JWT across the cut would no longer match its pattern."""
    agent = "C" * 241 + " " + secret
    line, _ = await _access_line([(b"user-agent", agent.encode())])
    assert secret[:8] not in line["user_agent"]


@pytest.mark.security(stride="I", asvs=("V16.2",))
async def test_a_secret_shaped_request_id_is_replaced() -> None:
    line, answered = await _access_line([(b"x-request-id", b"4012888888881881")])
    assert answered != "4012888888881881"
    assert line["request_id"] == answered
    line, answered = await _access_line([(b"x-request-id", b"req-123.abc")])
    assert (answered, line["request_id"]) == ("req-123.abc", "req-123.abc")


@pytest.mark.security(stride="D", asvs=("V15.2",))
async def test_past_max_concurrency_requests_wait_their_turn_then_are_shed() -> None:
    """Two requests in flight with ``max_concurrency=2``: a third waits for a turn (its app
    does not start), /healthz does not wait; when none frees within the queue timeout the
    third is answered 503 problem+json with Retry-After, never reaching the app; one that
    waits while a slot frees is served."""
    release = asyncio.Event()
    reached: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        if scope["path"] == "/slow":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    limits = HttpLimits(max_concurrency=2, queue_timeout=0.2)
    middleware = RequestContextMiddleware(app, limits=limits)  # type: ignore[arg-type]

    async def call(path: str) -> list[Message]:
        scope = {"type": "http", "method": "GET", "path": path, "client": ("1.2.3.4", 1)}
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        await middleware(scope, receive, send)  # type: ignore[arg-type]
        return sent

    slow = [asyncio.create_task(call("/slow")) for _ in range(2)]
    await asyncio.sleep(0)
    health = await asyncio.wait_for(call("/healthz"), 1)
    shed = await asyncio.wait_for(call("/v1/notes"), 1)
    assert reached == ["/slow", "/slow", "/healthz"]
    start, body = shed
    assert start["status"] == 503
    assert (b"retry-after", b"1") in start["headers"]
    assert (b"content-type", b"application/problem+json") in start["headers"]
    assert json.loads(body["body"])["status"] == 503
    assert health[0]["status"] == 200
    waiting = asyncio.create_task(call("/v1/notes"))
    await asyncio.sleep(0.05)
    assert reached[-1] == "/healthz"  # still waiting for its turn
    release.set()
    assert (await asyncio.wait_for(waiting, 1))[0]["status"] == 200
    await asyncio.gather(*slow)
