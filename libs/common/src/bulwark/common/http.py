"""ASGI middleware for every HTTP service: request ids and one access-log line per request.

It wraps the whole application (outside routing), so unmatched routes and errors are logged
too. The request id is echoed from ``X-Request-ID`` when the client sent a well-formed one,
otherwise generated, stored in ``scope["state"]["request_id"]``, bound to the structlog
context for every line logged during the request, and returned in ``X-Request-ID``.

The client address is resolved once per request (see `resolve_client_ip`) and kept in
``scope["state"]["client_ip"]``; `client_ip` reads it. Headers that code below the router
puts in ``scope["state"]["response_headers"]`` (say, the rate-limit fields) are added to
whatever response the request ends with, errors included.

Requests the HTTP server refuses before the application runs (a malformed request, a head
over the limits, a timeout: see `bulwark.common.http_server`) get the same access line,
written by the server with `log_access`; ``route`` is then `UNPARSED_ROUTE` and ``refused``
says why. When the server refuses a request the application is already serving (a framing
error or a timeout in its body), it records the refusal in ``scope["state"]`` under
`REFUSAL_STATE` and the middleware's line reports that status and reason.
"""

import asyncio
import functools
import ipaddress
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from http import HTTPStatus
from typing import Any, NamedTuple, cast

import msgspec
import structlog

from bulwark.common.logging import current_trace_ids, line_logger
from bulwark.common.metrics import UNMATCHED_ROUTE, record_http_request
from bulwark.common.outages import OutageLog
from bulwark.common.redaction import redact_text

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")
_access_log = line_logger("bulwark.access")
# User-Agent is copied into the access line cut to this many characters.
_MAX_LOGGED_USER_AGENT = 256
# Characters of User-Agent redacted to produce those 256: beyond the cut, so a secret that
# crosses it (a card number in groups, an SSN, ``password=...``) is seen whole and masked.
_USER_AGENT_WINDOW = _MAX_LOGGED_USER_AGENT + 128
_WHITESPACE = re.compile(r"\s")
#: ``route`` of the access line of a request refused before it was routed (docs/logs.md).
UNPARSED_ROUTE = "<unparsed>"
#: Key of ``scope["state"]`` where the server records a `Refusal` of a request the
#: application is serving; `RequestContextMiddleware` logs its status and reason.
REFUSAL_STATE = "bulwark.refusal"
_APP_VERSION = re.compile(r"^[0-9A-Za-z.+_-]{1,64}\Z")
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


def logged_user_agent(value: str | None) -> str | None:
    """What the access line records of ``User-Agent``: its first 256 characters, redacted.

    The cost is bounded whatever the header's length: only the first 384 characters are
    redacted (`redact_text` is linear, but the header may be as long as the server's head
    limit and this runs on every request). A secret that starts before character 256 and
    ends within 384 is seen whole; one that runs past 384 would be seen only in part, so
    when the value is longer than the window its last, cut, whitespace-free token is
    dropped before redaction: JWTs, bearer credentials, refresh tokens and URL passwords
    hold no whitespace, and the quoted and ``name=value`` forms are masked to their end.
    """
    if not value:
        return None
    window = value[:_USER_AGENT_WINDOW]
    if len(value) > len(window) and not value[len(window)].isspace():
        last_space = _WHITESPACE.search(window[::-1])
        window = window[: len(window) - last_space.start() - 1] if last_space else ""
    return redact_text(window)[:_MAX_LOGGED_USER_AGENT]


def _checked(value: str | None, valid: str | None) -> str | None:
    """What the access line records of a client header: its validated form, None when the
    header is absent, `INVALID` when it is present but malformed (never the raw value)."""
    return valid if value is None or valid is not None else INVALID


_DEVICE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")
_PLATFORMS = frozenset({"ios", "android", "web"})


class Refusal(NamedTuple):
    """A request the HTTP server refused: the status it answered (or would have), a fixed
    reason logged as ``refused`` (docs/http-limits.md lists them), and the body bytes of
    the server's answer (None when the application's response was sent instead)."""

    status: int
    reason: str
    response_bytes: int | None = None


#: Status logged for a request whose client went away before sending its whole body
#: (nginx's "client closed request"; never sent: there is no one to send it to).
CLIENT_CLOSED_REQUEST = 499


class RequestRefusedError(BaseException):
    """Raised by `RequestContextMiddleware` into the application when it reads the body of a
    request the server has refused and answered (a framing error, a body timeout): the
    application stops there, and its access line reports the refusal. A BaseException, so
    no error handler of the application turns it into a 500 (it is not an error of ours)."""


class HttpLimits(msgspec.Struct, frozen=True, kw_only=True):
    """What the HTTP server accepts of a request head, and how long it waits for a request
    (``HTTP_*`` settings; docs/http-limits.md).

    Attributes:
        max_header_bytes: the largest request head, request line and header fields
            together, in bytes; a larger one is answered 431 (414 when the request target
            alone is larger) and the connection closed.
        max_headers: the most header fields in one request; more is answered 431.
        header_timeout: seconds a connection may wait, from its start or from the end of
            its previous response, until a request head is complete; then 408 (or a plain
            close when nothing of a next request was sent).
        body_timeout: seconds from the end of a request head until its body is complete;
            then 408 (or a close when the response was already sent).
        max_concurrency: the most requests one process works on at once; more wait their
            turn (first come, first served), ``/healthz`` and ``/readyz`` excepted, so that
            overload slows no decision past its deadline (`RequestContextMiddleware`).
        queue_timeout: the longest a request waits for its turn, in seconds; then it is
            answered 503 with ``Retry-After``, as is one that finds `MAX_QUEUED_PER_SLOT`
            times ``max_concurrency`` requests waiting already.
        max_body_bytes: the most bytes read after a request's head (its body and framing),
            counted per read; more is answered 413. 1 MiB: Bulwark's JSON bodies are at most
            64 KiB. The API raises it when it takes uploaded files itself (its local uploads
            backend, development only; docs/uploads.md).
    """

    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_concurrency: int = 64
    queue_timeout: float = 2.0
    max_body_bytes: int = 1024 * 1024


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


#: Longest address text parsed (an IPv6 address with an IPv4 tail is 45 characters); a longer
#: one is malformed. Bounds what the cache of parsed addresses holds.
_LONGEST_ADDRESS = 64


def _address(text: str) -> IPAddress | None:
    """``text`` as an address (IPv4-mapped IPv6 taken as IPv4), or None when malformed."""
    text = text.strip()
    return _parsed_address(text) if len(text) <= _LONGEST_ADDRESS else None


@functools.lru_cache(maxsize=4096)
def _parsed_address(text: str) -> IPAddress | None:
    # Cached: the same few peers and proxies come back on every request.
    try:
        address = ipaddress.ip_address(text)
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
    """``X-App-Version`` when well-formed (1-64 of ``[0-9A-Za-z.+_-]``, e.g. ``1.4.2``), else
    None."""
    value = _header(scope, b"x-app-version")
    return value if value and _APP_VERSION.match(value) else None


def platform(scope: Mapping[str, Any]) -> str | None:
    """``X-Platform`` lower-cased when it is ios, android or web, else None."""
    value = (_header(scope, b"x-platform") or "").strip().lower()
    return value if value in _PLATFORMS else None


def log_access(
    scope: Mapping[str, Any],
    *,
    request_id: str,
    method: str | None,
    route: str,
    status: int,
    seconds: float,
    request_bytes: int,
    response_bytes: int,
    client_ip: str | None,
    user_id: str | None = None,
    refused: str | None = None,
    trace_ids: Mapping[str, str] | None = None,
) -> None:
    """Write the access line of one request (docs/logs.md) and count it in the metrics.

    ``scope`` supplies the request's headers (``scope["headers"]``, ASGI pairs: those
    parsed so far for a refused request) for the mobile fields and the User-Agent; the
    other fields are given. ``refused`` (a `Refusal` reason) is written only when set.
    """
    record_http_request({"method": method or "", "path_template": route}, status, seconds)
    refusal = {"refused": refused} if refused is not None else {}
    _access_log.info(
        "request",
        request_id=request_id,
        user_id=user_id,
        method=method,
        route=route,
        status=status,
        latency_ms=round(seconds * 1000, 2),
        request_bytes=request_bytes,
        response_bytes=response_bytes,
        app_version=_checked(_header(scope, b"x-app-version"), app_version(scope)),
        platform=_checked(_header(scope, b"x-platform"), platform(scope)),
        device_id=_checked(_header(scope, b"x-device-id"), device_id(scope)),
        user_agent=logged_user_agent(_header(scope, b"user-agent")),
        client_ip=client_ip,
        **refusal,
        **(trace_ids or {}),
    )


#: Paths answered even when the process is at its concurrency limit: liveness must not fail
#: under load (a restart would only add to it), and readiness reports the dependencies.
_ALWAYS_ADMITTED = frozenset({"/healthz", "/readyz"})
#: ``Retry-After`` of a 503 for an overloaded process, in seconds.
OVERLOADED_RETRY_AFTER_SECONDS = 1
#: Requests allowed to wait for a turn, per request worked on (`HttpLimits.max_concurrency`).
MAX_QUEUED_PER_SLOT = 16


class RequestContextMiddleware:
    """Outermost ASGI wrapper: request id, client address, structlog context, the access log,
    and admission control.

    Admission: at most ``max_concurrency`` requests are worked on at once; the others wait
    for their turn, first come first served, for at most ``queue_timeout`` seconds (and at
    most `MAX_QUEUED_PER_SLOT` per slot may wait), then are answered 503 problem+json with
    ``Retry-After``, their access line saying ``refused: "overloaded"``, with one warning
    (``overloaded``) per burst. A request's deadlines (database, Redis, the rate limiter)
    start when its turn comes. Without the bound, a burst would lengthen every request's
    turn on the event loop until those deadlines expired for reasons of our own: the
    rate-limit call (whose endpoint may then fail open, letting load switch the limits off)
    and the revocation check (503s).
    """

    def __init__(
        self,
        app: ASGIApp,
        trusted_proxies: Sequence[IPNetwork] = (),
        limits: HttpLimits | None = None,
    ) -> None:
        """Wrap ``app``; ``X-Forwarded-For`` is believed only from ``trusted_proxies``;
        ``limits`` gives the admission bounds (`HttpLimits`)."""
        self.app = app
        self.trusted_proxies: TrustedProxies = tuple(trusted_proxies)
        limits = limits or HttpLimits()
        self._queue_timeout = limits.queue_timeout
        self._max_waiting = MAX_QUEUED_PER_SLOT * limits.max_concurrency
        self._turns = asyncio.Semaphore(limits.max_concurrency)
        self._waiting = 0
        self._overload = OutageLog("overloaded", "overload_ended")

    async def _admit(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the application on this request when its turn comes, or answer 503 when it
        waited too long or too many are waiting (see the class docstring)."""
        if scope["path"] in _ALWAYS_ADMITTED:
            await self.app(scope, receive, send)
            return
        if not await self._take_turn():
            self._overload.failed("max_concurrency")
            scope["state"][REFUSAL_STATE] = Refusal(503, "overloaded")
            await _answer_overloaded(scope, send)
            return
        self._overload.succeeded()
        try:
            await self.app(scope, receive, send)
        finally:
            self._turns.release()

    async def _take_turn(self) -> bool:
        """Wait for a free slot; False when none came within the queue timeout, or the
        queue is full."""
        if not self._turns.locked():
            await self._turns.acquire()  # free now: no wait
            return True
        if self._waiting >= self._max_waiting:
            return False
        self._waiting += 1
        try:
            async with asyncio.timeout(self._queue_timeout):
                await self._turns.acquire()
        except TimeoutError:
            return False
        finally:
            self._waiting -= 1
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point; non-HTTP scopes (lifespan) pass straight through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        # The server may have given the request an id already, when it refused it early.
        request_id = (
            request_id_or_none(_header(scope, b"x-request-id"))
            or state.get("request_id")
            or uuid.uuid4().hex
        )
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

        body_done = False

        async def counting_receive() -> Message:
            nonlocal body_done
            message = await receive()
            if message["type"] == "http.disconnect":
                if REFUSAL_STATE not in state and not body_done:
                    # The client left before sending its whole body: nothing to answer, and
                    # no error of ours (Litestar would log a 500 with a traceback).
                    state[REFUSAL_STATE] = Refusal(CLIENT_CLOSED_REQUEST, "client_disconnected", 0)
                if REFUSAL_STATE in state:
                    raise RequestRefusedError
            if message["type"] == "http.request":
                counters["request_bytes"] += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
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
                await self._admit(scope, counting_receive, tagging_send)
            except RequestRefusedError:
                pass  # the server has answered; the line below says so
            finally:
                refusal: Refusal | None = state.get(REFUSAL_STATE)
                log_access(
                    scope,
                    request_id=request_id,
                    user_id=state.get("user_id"),
                    method=scope["method"],
                    route=scope.get("path_template") or UNMATCHED_ROUTE,
                    status=refusal.status if refusal else counters["status"],
                    seconds=time.perf_counter() - started,
                    request_bytes=counters["request_bytes"],
                    response_bytes=counters["response_bytes"]
                    if refusal is None or refusal.response_bytes is None
                    else refusal.response_bytes,
                    client_ip=client_ip(scope),
                    refused=refusal.reason if refusal else None,
                    trace_ids=trace_ids,
                )


def problem_body(status: int, detail: str, request_id: str, instance: str | None = None) -> bytes:
    """An RFC 9457 problem+json body for answers written below the application (server
    refusals, overload), in the shape of `bulwark.common.problems`' (``instance``, the path,
    when one was parsed)."""
    problem: dict[str, object] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        problem["instance"] = instance
    return msgspec.json.encode({**problem, "request_id": request_id})


async def _answer_overloaded(scope: Scope, send: Send) -> None:
    """503 problem+json (RFC 9457) with ``Retry-After``, before any work on the request."""
    body = problem_body(
        503,
        "The service is busy; retry shortly.",
        scope["state"]["request_id"],
        instance=str(scope.get("path", "")),
    )
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(OVERLOADED_RETRY_AFTER_SECONDS).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def serve(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    limits: HttpLimits | None = None,
    trusted_proxies: TrustedProxies = (),
) -> None:
    """Run ``app`` under uvicorn until SIGINT/SIGTERM, with our logging left in charge
    (no uvicorn access log, no ``Server`` header, no trust in forwarded headers), and
    HTTP/1.1 served by `bulwark.common.http_server` under ``limits`` (default `HttpLimits`).

    ``trusted_proxies`` resolves the client address of the requests the server refuses
    itself, as `RequestContextMiddleware` does for the others. No WebSocket: an upgrade
    request is answered as a plain request and its connection closed.
    """
    import uvicorn  # noqa: PLC0415  # only the serving processes need it

    from bulwark.common.http_server import protocol_class  # noqa: PLC0415  # imports uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        http=protocol_class(limits or HttpLimits(), trusted_proxies),
        ws="none",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        lifespan="on",
    )
