"""The gRPC server: RLS v3, standard health checking and reflection, one access log per call.

Life cycle (as in the gRPC examples): `RateLimitServer.start` opens Redis, binds, starts and
then reports SERVING; `RateLimitServer.stop` reports NOT_SERVING first, then stops gracefully
and closes Redis.
"""

from __future__ import annotations  # grpc-stubs generics are not subscriptable at run time

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # not in stubs

from bulwark.common.http import request_id_or_none
from bulwark.common.logging import get_logger, line_logger
from bulwark.common.metrics import record_grpc_call
from bulwark.common.telemetry import grpc_server_interceptors
from bulwark.ratelimit._generated.v1 import operator_pb2, operator_pb2_grpc
from bulwark.ratelimit.cache import OverLimitCache
from bulwark.ratelimit.cluster import RedisClient, SlotGroupedLimiter, discover, open_redis
from bulwark.ratelimit.limiter import Limiter, LimiterUnavailableError
from bulwark.ratelimit.operator_api import BlockRecorder, RateLimitOperator
from bulwark.ratelimit.reflection import enable_server_reflection
from bulwark.ratelimit.reload import RulesWatcher
from bulwark.ratelimit.rules import Rules, load_rules
from bulwark.ratelimit.service import InvalidRequestError, RateLimitService
from bulwark.ratelimit.settings import Settings

log = get_logger(__name__)
_call_log = line_logger(__name__)

RLS_SERVICE = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name
OPERATOR_SERVICE = operator_pb2.DESCRIPTOR.services_by_name["RateLimitOperator"].full_name
MAX_MESSAGE_BYTES = 64 * 1024
#: Longest a client connection lives before the server asks the client to reconnect, in seconds.
MAX_CONNECTION_AGE_SECONDS = 300

# The one table from errors to gRPC status codes and the text the caller sees.
_STATUS: dict[type[Exception], tuple[grpc.StatusCode, str | None]] = {
    InvalidRequestError: (grpc.StatusCode.INVALID_ARGUMENT, None),  # None: the exception's message
    LimiterUnavailableError: (grpc.StatusCode.UNAVAILABLE, "rate-limit store unavailable"),
}

# grpc-stubs type handlers as synchronous callables; ours are coroutine functions.
_Behavior = Callable[..., Any]


if TYPE_CHECKING:
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor


class AccessLogInterceptor(_ServerInterceptor):
    """Writes one JSON line per unary call and maps exceptions to status codes via `_STATUS`.

    Fields (docs/logs.md): ``method`` and ``route`` (the full gRPC method), ``code`` (gRPC
    status name), ``latency_ms``, ``request_bytes`` and ``response_bytes`` (serialised
    messages), ``peer`` and ``client_ip`` (the calling process), ``domain`` (when the request
    has one); ``request_id`` (the caller's ``x-request-id`` metadata, else new) is bound for
    every line of the call. Unexpected exceptions are logged with their traceback and
    answered with INTERNAL and a generic message. Streaming calls (health Watch, reflection)
    pass through.
    """

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """Wrap the unary-unary handler of the called method."""
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            _logged(handler_call_details.method, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's ``x-request-id`` metadata when well-formed, else a new id."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str):
            return request_id_or_none(value) or uuid.uuid4().hex
    return uuid.uuid4().hex


def _peer_ip(peer: str) -> str | None:
    """The address in a gRPC peer string (``ipv4:10.0.0.5:41234``, ``ipv6:[::1]:41234``)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.partition("]")[0].lstrip("[") or None
    if kind == "ipv4":
        return rest.rpartition(":")[0] or None
    return None


def _past_deadline(context: grpc.aio.ServicerContext[Any, Any]) -> bool:
    """Whether the caller's deadline has passed (False for a call without one).

    gRPC's core cancels such a call by itself, but tells the handler only at its next
    ``await``, and only if the news is processed before what the handler awaits: an answer
    from Redis that arrives just before the deadline, read after it (a busy event loop),
    ends the handler normally on a cancelled call. Sending that answer then fails in core,
    and grpc.aio logs the failure at error with an ``ExecuteBatchError`` traceback unless its
    own cancellation notice happened to be handled first.
    """
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


def _logged(method: str, behavior: _Behavior) -> _Behavior:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        start = time.perf_counter()
        response = None
        cancelled = False
        unbind = structlog.contextvars.bind_contextvars(request_id=_request_id(context))
        try:
            answer = await behavior(request, context)
        except asyncio.CancelledError:
            cancelled = True  # the caller's deadline passed, or it went away
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - every error becomes a status, see _status_for
            status = _status_for(exc, method)
            if _past_deadline(context):
                cancelled = True  # as below: a status would not be sent either
                raise asyncio.CancelledError from None
            await context.abort(*status)
        else:
            if _past_deadline(context):
                # Nobody waits for the answer: end as a cancelled call does, so that grpc.aio
                # sends nothing (a CancelledError from a handler is logged at debug only).
                cancelled = True
                raise asyncio.CancelledError
            response = answer
            return response
        finally:
            code = grpc.StatusCode.CANCELLED if cancelled else context.code() or grpc.StatusCode.OK
            record_grpc_call(method, getattr(code, "name", str(code)), time.perf_counter() - start)
            _call_log.info(
                "grpc_call",
                method=method,
                code=code.name if isinstance(code, grpc.StatusCode) else str(code),
                route=method,
                latency_ms=round((time.perf_counter() - start) * 1000, 3),
                request_bytes=request.ByteSize(),
                response_bytes=0 if response is None else response.ByteSize(),
                peer=context.peer(),
                client_ip=_peer_ip(context.peer() or ""),
                domain=getattr(request, "domain", None),
            )
            structlog.contextvars.reset_contextvars(**unbind)

    return wrapper


def _status_for(exc: Exception, method: str) -> tuple[grpc.StatusCode, str]:
    for error, (code, details) in _STATUS.items():
        if isinstance(exc, error):
            return code, details or str(exc)
    log.error("grpc_unhandled_error", method=method, exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error"


class BindError(RuntimeError):
    """The server could not listen on its address (in use, or not a local address)."""


class RateLimitServer:
    """One rate-limit server process. Build with `build_server`."""

    def __init__(self, settings: Settings, rules: Rules) -> None:
        """Prepare a server for ``settings`` and ``rules``; nothing is opened until `start`."""
        self.settings = settings
        self.rules = rules
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._redis: RedisClient | None = None
        self._recorder: BlockRecorder | None = None
        self._watcher: RulesWatcher | None = None
        self._health = health_aio.HealthServicer()

    async def start(self) -> int:
        """Open Redis, bind ``host:port``, start serving and report SERVING.

        Returns:
            The bound port (useful with port 0).

        Raises:
            BindError: the address could not be bound.
        """
        timeout = self.settings.redis_timeout_seconds
        # One immediate retry so the first call after a Redis restart reconnects; the
        # limiter's own timeout still bounds the whole call.
        self._redis = open_redis(self.settings.redis_url, self.settings.redis_cluster, timeout)
        await discover(self._redis, timeout)
        limiter: Any = Limiter(self._redis, timeout)  # every rule algorithm, docs/ratelimit.md
        if self.settings.redis_cluster:
            limiter = SlotGroupedLimiter(limiter, timeout)
        prefix = self.settings.redis_key_prefix
        recorder = self._recorder = BlockRecorder(limiter, self._redis, prefix)
        cache = OverLimitCache()
        service = RateLimitService(self.rules, recorder, prefix, cache)
        self._watcher = RulesWatcher(self.settings.rules_path, self._reload(service))
        self._watcher.start()
        operator = RateLimitOperator(
            lambda: self.rules, limiter, self._redis, prefix, recorder=recorder, cache=cache
        )

        server = grpc.aio.server(
            # Tracing first, so the access line is written inside the call's span.
            interceptors=[*grpc_server_interceptors(), AccessLogInterceptor()],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),  # never share a port with another process
                # Clients reconnect (and resolve the service name again) at least every
                # 5 minutes, so replicas added by a scale-up take a share of the calls.
                ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_SECONDS * 1000),
                ("grpc.max_connection_age_grace_ms", 30_000),
            ],
        )
        rls_pb2_grpc.add_RateLimitServiceServicer_to_server(service, server)
        # grpcio-tools writes no stubs for the *_grpc module.
        operator_pb2_grpc.add_RateLimitOperatorServicer_to_server(  # type: ignore[no-untyped-call]
            operator, server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        enable_server_reflection((RLS_SERVICE, OPERATOR_SERVICE, health.SERVICE_NAME), server)
        host = self.settings.host
        address = f"{f'[{host}]' if ':' in host else host}:{self.settings.port}"  # IPv6: [::]
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError:  # grpcio >= 1.51 raises; older versions returned 0
            self.port = 0
        if self.port == 0:
            await self._redis.aclose()
            raise BindError(f"cannot bind {address}")
        self._server = server
        await server.start()
        for name in ("", RLS_SERVICE, OPERATOR_SERVICE):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Report NOT_SERVING, let calls in flight finish (up to ``grace_seconds``), close."""
        await self._health.enter_graceful_shutdown()
        if self._watcher is not None:
            await self._watcher.stop()
        if self._server is not None:
            await self._server.stop(grace_seconds)
        if self._recorder is not None:
            await self._recorder.drain()
        if self._redis is not None:
            await self._redis.aclose()

    def _reload(self, service: RateLimitService) -> Callable[[Rules], None]:
        def apply(rules: Rules) -> None:
            self.rules = rules  # read by the operator API
            service.set_rules(rules)

        return apply

    async def wait_for_termination(self) -> None:
        """Wait until the server has stopped."""
        if self._server is not None:
            await self._server.wait_for_termination()


def build_server(settings: Settings) -> RateLimitServer:
    """Load the rules named by ``settings`` and return an unstarted `RateLimitServer`.

    Raises:
        RulesError: the rules file is unreadable or invalid.
    """
    return RateLimitServer(settings, load_rules(settings.rules_path))
