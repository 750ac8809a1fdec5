"""ASGI middleware for every HTTP service: request ids and one access-log line per request.

It wraps the whole application (outside routing), so unmatched routes and errors are logged
too. The request id is echoed from ``X-Request-ID`` when the client sent a well-formed one,
otherwise generated, stored in ``scope["state"]["request_id"]``, bound to the structlog
context for every line logged during the request, and returned in ``X-Request-ID``.
"""

import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import structlog

from bulwark.common.logging import get_logger

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_access_log = get_logger("bulwark.access")
# Client-supplied header values copied into logs are cut to this many characters.
_MAX_LOGGED_HEADER = 64


def _header(scope: Mapping[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _logged(value: str | None) -> str | None:
    return None if value is None else value[:_MAX_LOGGED_HEADER]


_DEVICE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_PLATFORMS = frozenset({"ios", "android", "web"})


def client_ip(scope: Mapping[str, Any]) -> str | None:
    """The peer address of the connection (trusted-proxy resolution comes with the ingress)."""
    client = scope.get("client")
    return str(client[0]) if client else None


def device_id(scope: Mapping[str, Any]) -> str | None:
    """``X-Device-Id`` when well-formed (1-128 of ``[A-Za-z0-9._:-]``), else None."""
    value = _header(scope, b"x-device-id")
    return value if value and _DEVICE_ID.match(value) else None


def platform(scope: Mapping[str, Any]) -> str | None:
    """``X-Platform`` lower-cased when it is ios, android or web, else None."""
    value = (_header(scope, b"x-platform") or "").strip().lower()
    return value if value in _PLATFORMS else None


class RequestContextMiddleware:
    """Outermost ASGI wrapper: request id, structlog context and the access log.

    The access line has: request_id, user_id (from ``scope["state"]["user_id"]`` when the
    route authenticated the caller), method, route (the route template, never the raw path),
    status, latency_ms, request_bytes, response_bytes, app_version, platform, device_id.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point; non-HTTP scopes (lifespan) pass straight through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        counters = {"request_bytes": 0, "response_bytes": 0, "status": 500}
        started = time.perf_counter()

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                counters["request_bytes"] += len(message.get("body", b""))
            return message

        async def tagging_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                counters["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                counters["response_bytes"] += len(message.get("body", b""))
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, counting_receive, tagging_send)
            finally:
                _access_log.info(
                    "request",
                    user_id=state.get("user_id"),
                    method=scope["method"],
                    route=scope.get("path_template") or "<unmatched>",
                    status=counters["status"],
                    latency_ms=round((time.perf_counter() - started) * 1000, 2),
                    request_bytes=counters["request_bytes"],
                    response_bytes=counters["response_bytes"],
                    app_version=_logged(_header(scope, b"x-app-version")),
                    platform=_logged(_header(scope, b"x-platform")),
                    device_id=_logged(_header(scope, b"x-device-id")),
                    client_ip=client_ip(scope),
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
