"""ASGI middleware for every HTTP service: request ids and one access-log line per request.

It wraps the whole application (outside routing), so unmatched routes and errors are logged
too. The request id is echoed from ``X-Request-ID`` when the client sent a well-formed one,
otherwise generated, stored in ``scope["state"]["request_id"]``, bound to the structlog
context for every line logged during the request, and returned in ``X-Request-ID``.

The client address is resolved once per request (see `resolve_client_ip`) and kept in
``scope["state"]["client_ip"]``; `client_ip` reads it. Headers that code below the router
puts in ``scope["state"]["response_headers"]`` (say, the rate-limit fields) are added to
whatever response the request ends with, errors included.
"""

import ipaddress
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any, cast

import structlog

from bulwark.common.logging import current_trace_ids, get_logger
from bulwark.common.metrics import record_http_request
from bulwark.common.redaction import redact_text

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_access_log = get_logger("bulwark.access")
# User-Agent is copied into the access line cut to this many characters.
_MAX_LOGGED_USER_AGENT = 256
_APP_VERSION = re.compile(r"^[0-9A-Za-z.+_-]{1,32}$")
#: Logged in place of a mobile header that is present but malformed (docs/logs.md).
INVALID = "invalid"


def _header(scope: Mapping[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def request_id_or_none(value: str | None) -> str | None:
    """``value`` when it is a well-formed request id (1-128 of ``[A-Za-z0-9._:-]``) that
    does not look like a secret (a JWT, a card number, ...: see `redact_text`), else None.

    Used for ``X-Request-ID`` here and for the ``x-request-id`` gRPC metadata. A secret-shaped
    id would be redacted in the logs (so the id echoed to the client could not be found) yet
    sit in clear in a span attribute; such a request gets a generated id instead."""
    if not value or not _REQUEST_ID.match(value):
        return None
    return value if redact_text(value) == value else None


def _logged_user_agent(value: str | None) -> str | None:
    return redact_text(value)[:_MAX_LOGGED_USER_AGENT] if value else None


def _checked(value: str | None, valid: str | None) -> str | None:
    """What the access line records of a client header: its validated form, None when the
    header is absent, `INVALID` when it is present but malformed (never the raw value)."""
    return valid if value is None or valid is not None else INVALID


_DEVICE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_PLATFORMS = frozenset({"ios", "android", "web"})


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Proxies whose ``X-Forwarded-For`` entries are believed (``TRUSTED_PROXIES``).
TrustedProxies = tuple[IPNetwork, ...]


def parse_trusted_proxies(value: str) -> TrustedProxies:
    """Parse ``TRUSTED_PROXIES``: addresses or CIDRs separated by commas or spaces.

    ``"10.0.0.0/8, 127.0.0.1 ::1"`` gives three networks (a bare address is a /32 or /128);
    an empty string gives ``()``, which trusts no proxy.

    Raises:
        ValueError: an entry is neither an address nor a network (host bits set included).
    """
    return tuple(ipaddress.ip_network(part) for part in value.replace(",", " ").split())


def _address(text: str) -> IPAddress | None:
    """``text`` as an address (IPv4-mapped IPv6 taken as IPv4), or None when malformed."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, trusted: TrustedProxies) -> bool:
    return any(address in network for network in trusted)


def resolve_client_ip(
    peer: str | None, forwarded_for: Iterable[str], trusted: TrustedProxies
) -> str | None:
    """The client's address: the right-most untrusted hop of ``X-Forwarded-For``.

    Args:
        peer: the TCP peer address, e.g. ``"10.0.0.5"`` (None when unknown).
        forwarded_for: every ``X-Forwarded-For`` field value in arrival order (each a
            comma-separated list, left-most = the original client as claimed).
        trusted: proxies whose additions are believed (`parse_trusted_proxies`).

    Returns:
        When the peer is not a trusted proxy (always, with no ``trusted``), the peer itself:
        a client's own ``X-Forwarded-For`` is ignored. Otherwise the list is walked from the
        right, skipping trusted hops, and the first untrusted address is the client; values
        left of it were written by the client and cannot change its bucket. A malformed
        entry ends the walk: the last trusted hop seen is then the client (so is the
        left-most hop when every one is trusted). Addresses come back in canonical form.
    """
    peer_address = _address(peer) if peer else None
    if peer_address is None:
        return peer
    if not _trusted(peer_address, trusted):
        return str(peer_address)
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    client = peer_address
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break
        client = address
        if not _trusted(address, trusted):
            break
    return str(client)


def _headers(scope: Mapping[str, Any], name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope.get("headers", []) if key == name]


def client_ip(scope: Mapping[str, Any]) -> str | None:
    """The client's address as resolved by `RequestContextMiddleware` (trusted proxies and
    ``X-Forwarded-For``); the TCP peer address outside that middleware; None when unknown."""
    state = scope.get("state") or {}
    if "client_ip" in state:
        return cast("str | None", state["client_ip"])
    client = scope.get("client")
    return str(client[0]) if client else None


def ingress_header(scope: Mapping[str, Any], name: bytes, trusted: TrustedProxies) -> str | None:
    """Header ``name`` (lower-case bytes, e.g. ``b"cloudfront-viewer-country"``) as set by
    the ingress: its value when the TCP peer is one of the ``trusted`` proxies, else None (a
    client reaching the service directly may send anything). The proxy must set or strip
    the header on every request it forwards."""
    client = scope.get("client")
    peer = _address(str(client[0])) if client else None
    if peer is None or not _trusted(peer, trusted):
        return None
    return _header(scope, name)


def device_id(scope: Mapping[str, Any]) -> str | None:
    """``X-Device-Id`` when well-formed (1-128 of ``[A-Za-z0-9._:-]``), else None."""
    value = _header(scope, b"x-device-id")
    return value if value and _DEVICE_ID.match(value) else None


def app_version(scope: Mapping[str, Any]) -> str | None:
    """``X-App-Version`` when well-formed (1-32 of ``[0-9A-Za-z.+_-]``, e.g. ``1.4.2``), else
    None."""
    value = _header(scope, b"x-app-version")
    return value if value and _APP_VERSION.match(value) else None


def platform(scope: Mapping[str, Any]) -> str | None:
    """``X-Platform`` lower-cased when it is ios, android or web, else None."""
    value = (_header(scope, b"x-platform") or "").strip().lower()
    return value if value in _PLATFORMS else None


class RequestContextMiddleware:
    """Outermost ASGI wrapper: request id, client address, structlog context, the access log.

    The access line (``"event": "request"``, schema in docs/logs.md) has: request_id,
    trace_id and span_id (of the current span when the response starts), user_id (from
    ``scope["state"]["user_id"]`` when the route authenticated the caller), method, route
    (the route template, never the raw path), status, latency_ms, request_bytes,
    response_bytes, app_version, platform, device_id (validated; ``"invalid"`` when
    malformed), user_agent (cut to 256 characters), client_ip (resolved with
    ``trusted_proxies``, see `resolve_client_ip`).
    """

    def __init__(self, app: ASGIApp, trusted_proxies: Sequence[IPNetwork] = ()) -> None:
        """Wrap ``app``; ``X-Forwarded-For`` is believed only from ``trusted_proxies``."""
        self.app = app
        self.trusted_proxies: TrustedProxies = tuple(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point; non-HTTP scopes (lifespan) pass straight through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_or_none(_header(scope, b"x-request-id")) or uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        client = scope.get("client")
        state["client_ip"] = resolve_client_ip(
            str(client[0]) if client else None,
            _headers(scope, b"x-forwarded-for"),
            self.trusted_proxies,
        )
        # Set below the router (e.g. by bulwark.common.rate_limits), added to the response.
        extra_headers: dict[bytes, bytes] = state.setdefault("response_headers", {})
        counters = {"request_bytes": 0, "response_bytes": 0, "status": 500}
        # The server span's ids, taken when the response starts: a tracing middleware inside
        # this one has ended its span by the time the access line is written.
        trace_ids: dict[str, str] = {}
        started = time.perf_counter()

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                counters["request_bytes"] += len(message.get("body", b""))
            return message

        async def tagging_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                counters["status"] = message["status"]
                trace_ids.update(current_trace_ids())
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                headers.extend(extra_headers.items())
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                counters["response_bytes"] += len(message.get("body", b""))
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, counting_receive, tagging_send)
            finally:
                record_http_request(scope, counters["status"], time.perf_counter() - started)
                _access_log.info(
                    "request",
                    user_id=state.get("user_id"),
                    method=scope["method"],
                    route=scope.get("path_template") or "<unmatched>",
                    status=counters["status"],
                    latency_ms=round((time.perf_counter() - started) * 1000, 2),
                    request_bytes=counters["request_bytes"],
                    response_bytes=counters["response_bytes"],
                    app_version=_checked(_header(scope, b"x-app-version"), app_version(scope)),
                    platform=_checked(_header(scope, b"x-platform"), platform(scope)),
                    device_id=_checked(_header(scope, b"x-device-id"), device_id(scope)),
                    # Redacted before it is cut: a secret across the cut would not be seen.
                    user_agent=_logged_user_agent(_header(scope, b"user-agent")),
                    client_ip=client_ip(scope),
                    **trace_ids,
                )


def serve(app: ASGIApp, host: str, port: int) -> None:
    """Run ``app`` under uvicorn until SIGINT/SIGTERM, with our logging left in charge
    (no uvicorn access log, no ``Server`` header, no trust in forwarded headers)."""
    import uvicorn  # noqa: PLC0415  # only the serving processes need it

    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        lifespan="on",
    )
