"""Client of the rate-limit service (Envoy RLS v3 ``ShouldRateLimit`` over gRPC).

Used by the HTTP services' middleware. Whether to fail open or closed when the service is
unavailable is the caller's decision: this client only raises `RateLimitUnavailable`.
"""

import hashlib
import re
from collections.abc import Sequence
from contextlib import nullcontext

import grpc
import msgspec
import structlog
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from opentelemetry import trace

from bulwark.common.telemetry import GrpcClientTracing, grpc_client_tracing, record_grpc_code

_Response = rls_pb2.RateLimitResponse
#: ``dynamic_metadata`` field the rate-limit service sets to true when its Redis failed and
#: the rules' ``failure_mode`` gave the answer (``bulwark.ratelimit.service``).
FAILURE_MODE_APPLIED = "bulwark.failure_mode_applied"
# The service rejects longer entry values (INVALID_ARGUMENT); rule values are never longer.
MAX_VALUE_LENGTH = 1024


_UNIT_SECONDS = {
    _Response.RateLimit.SECOND: 1,
    _Response.RateLimit.MINUTE: 60,
    _Response.RateLimit.HOUR: 3600,
    _Response.RateLimit.DAY: 86400,
}
# Windows that are no whole unit come as unit UNKNOWN; Bulwark's service then states the
# window in the limit's name ("5 per 900s"), which is read as a fallback.
_WINDOW_IN_NAME = re.compile(r"\bper (\d+) ?s\b")
# Reconnect quickly once the service is back (gRPC's default backoff grows to 120 s): a
# restarted limiter is in use again within about a second.
_CHANNEL_OPTIONS = [
    # Every address the target resolves to gets calls in turn: with a DNS name that lists
    # each rate-limiter replica (a Kubernetes headless Service), the load spreads over all
    # of them, and the server's maximum connection age makes clients re-resolve, so that new
    # replicas take their share (docs/deploy.md).
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class DescriptorStatus(msgspec.Struct, frozen=True):
    """The service's answer for one descriptor of the request.

    Attributes:
        limit: ``requests_per_unit`` of the rule that matched, or None when none did (then
            the other fields are 0/None/False).
        window_seconds: the rule's window in seconds, or None when the service did not say.
        remaining: ``limit_remaining``: hits still allowed in the window.
        reset_seconds: ``duration_until_reset`` rounded up to whole seconds.
        over_limit: this descriptor was over its limit.
    """

    limit: int | None
    window_seconds: int | None
    remaining: int
    reset_seconds: int
    over_limit: bool


class RateLimitDecision(msgspec.Struct, frozen=True):
    """The answer for one request.

    Attributes:
        allowed: no descriptor was over its limit (and the hits were counted).
        retry_after_seconds: when denied, whole seconds until enough hits leave the window
            for the request to fit (at least 1); 0 when allowed. Suits ``Retry-After``.
        remaining: the smallest ``limit_remaining`` among limited descriptors, or None when
            none is limited.
        limit: the ``requests_per_unit`` of the descriptor that gave ``remaining``, or None.
        failure_mode_applied: the limiter's Redis failed and its rules' ``failure_mode``
            answered (``dynamic_metadata`` field ``bulwark.failure_mode_applied``); a denial is
            then an outage, not an exhausted limit.
    """

    allowed: bool
    retry_after_seconds: int
    remaining: int | None
    limit: int | None
    failure_mode_applied: bool = False


class RateLimitReport(msgspec.Struct, frozen=True):
    """A decision and the per-descriptor answers behind it (`RateLimitClient.decide`).

    Attributes:
        decision: the summary, as `RateLimitClient.should_rate_limit` returns it.
        statuses: one `DescriptorStatus` per descriptor sent, in the same order.
    """

    decision: RateLimitDecision
    statuses: tuple[DescriptorStatus, ...]


class RateLimitUnavailable(Exception):  # noqa: N818 - name fixed by the shared contract
    """The service could not be reached or answered an error in time.

    ``code`` is the gRPC status (DEADLINE_EXCEEDED, UNAVAILABLE, INVALID_ARGUMENT, ...).
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        """Keep the gRPC ``code`` and ``details`` of the failure."""
        super().__init__(f"rate-limit service: {code.name}: {details}")
        self.code = code


#: The one method called, as gRPC names it (the span's name without the leading slash).
_SHOULD_RATE_LIMIT = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"


class RateLimitClient:
    """Asks the rate-limit service about one ``domain`` (e.g. ``bulwark-auth``).

    The gRPC channel is created on first use, inside the running event loop.
    """

    def __init__(self, target: str, domain: str, timeout_seconds: float = 0.1) -> None:
        """Talk to ``target`` (``host:port``, or ``dns:///name:port`` to spread calls over
        every address of ``name``) with a deadline of ``timeout_seconds`` per call."""
        self._target = target
        self._domain = domain
        self._timeout = timeout_seconds
        self._channel: grpc.aio.Channel | None = None
        self._stub: rls_pb2_grpc.RateLimitServiceStub | None = None
        self._tracing: GrpcClientTracing | None = None

    async def should_rate_limit(
        self, descriptors: Sequence[Sequence[tuple[str, str]]], hits_addend: int | Sequence[int] = 1
    ) -> RateLimitDecision:
        """`decide`, without the per-descriptor statuses."""
        return (await self.decide(descriptors, hits_addend)).decision

    async def decide(
        self, descriptors: Sequence[Sequence[tuple[str, str]]], hits_addend: int | Sequence[int] = 1
    ) -> RateLimitReport:
        """Count ``hits_addend`` hits against every descriptor, unless one is over its limit.

        Args:
            descriptors: one list of ``(key, value)`` entries per descriptor, e.g.
                ``[[("endpoint", "login"), ("email", email)]]``. Values longer than
                `MAX_VALUE_LENGTH` characters are sent as their SHA-256 digest.
            hits_addend: hits to count (>= 0), for every descriptor or one per descriptor
                (a sequence as long as ``descriptors``). 0 only checks: denied when one more
                hit would not fit.

        Raises:
            RateLimitUnavailable: the call failed or exceeded the deadline, or the request was
                rejected (INVALID_ARGUMENT).
            ValueError: a ``hits_addend`` is negative, or their number is not the number of
                descriptors.
        """
        hits = [hits_addend] * len(descriptors) if isinstance(hits_addend, int) else hits_addend
        if len(hits) != len(descriptors) or min(hits, default=0) < 0:
            raise ValueError("hits_addend must be >= 0, one for all or one per descriptor")
        request = rls_pb2.RateLimitRequest(domain=self._domain, hits_addend=max([*hits, 1]))
        for entries, count in zip(descriptors, hits, strict=True):
            descriptor = request.descriptors.add()
            # Set per descriptor as well: the wrapper type is the only way to send an explicit 0.
            descriptor.hits_addend.value = count
            for key, value in entries:
                descriptor.entries.append(
                    ratelimit_pb2.RateLimitDescriptor.Entry(key=key, value=_bounded(value))
                )
        stub = self._get_stub()
        metadata = _request_metadata()
        traced = (
            nullcontext(trace.INVALID_SPAN)
            if self._tracing is None
            else self._tracing.call(_SHOULD_RATE_LIMIT, metadata)
        )
        with traced as span:
            try:
                response = await stub.ShouldRateLimit(
                    request, timeout=self._timeout, metadata=tuple(metadata)
                )
            except grpc.aio.AioRpcError as exc:
                record_grpc_code(span, exc.code())
                raise RateLimitUnavailable(exc.code(), exc.details() or "") from exc
            record_grpc_code(span, grpc.StatusCode.OK)
        return RateLimitReport(_decision(response), tuple(_status(s) for s in response.statuses))

    def _get_stub(self) -> rls_pb2_grpc.RateLimitServiceStub:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self._target, options=_CHANNEL_OPTIONS)
            # A span per call, its context sent along as traceparent metadata.
            self._tracing = grpc_client_tracing()
            self._stub = rls_pb2_grpc.RateLimitServiceStub(self._channel)
        return self._stub

    async def close(self) -> None:
        """Close the channel; a later call opens a new one."""
        if self._channel is not None:
            await self._channel.close(grace=None)
        self._channel = self._stub = None


def _request_metadata() -> list[tuple[str, str]]:
    """``x-request-id`` of the request being served (bound by the HTTP middleware), so the
    rate limiter's access line names the same request."""
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    return [("x-request-id", request_id)] if isinstance(request_id, str) else []


def _bounded(value: str) -> str:
    """Replace an over-long (hostile) value by its digest, so it is still counted, not refused.

    No rule value is that long, so matching is unchanged, and distinct values keep distinct
    buckets.
    """
    if not value:
        return "-"  # the service refuses empty values; all empty ones share one bucket
    if len(value) <= MAX_VALUE_LENGTH:
        return value
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()


def _decision(response: rls_pb2.RateLimitResponse) -> RateLimitDecision:
    if response.overall_code not in (_Response.OK, _Response.OVER_LIMIT):
        raise RateLimitUnavailable(grpc.StatusCode.UNKNOWN, "response without overall_code")
    over = [s for s in response.statuses if s.code == _Response.OVER_LIMIT]
    retry_after = 0
    if response.overall_code == _Response.OVER_LIMIT:
        longest = max((s.duration_until_reset.ToNanoseconds() for s in over), default=0)
        retry_after = max(1, -(-longest // 1_000_000_000))  # ceil, in whole seconds
    limited = [s for s in response.statuses if s.HasField("current_limit")]
    tightest = min(limited, key=lambda s: s.limit_remaining, default=None)
    applied = response.dynamic_metadata.fields.get(FAILURE_MODE_APPLIED)
    return RateLimitDecision(
        allowed=response.overall_code == _Response.OK,
        retry_after_seconds=retry_after,
        remaining=None if tightest is None else tightest.limit_remaining,
        limit=None if tightest is None else tightest.current_limit.requests_per_unit,
        failure_mode_applied=applied is not None and applied.bool_value,
    )


def _status(status: rls_pb2.RateLimitResponse.DescriptorStatus) -> DescriptorStatus:
    over = status.code == _Response.OVER_LIMIT
    if not status.HasField("current_limit"):
        return DescriptorStatus(None, None, 0, 0, over_limit=over)
    limit = status.current_limit
    window = _UNIT_SECONDS.get(limit.unit)
    if window is None and (named := _WINDOW_IN_NAME.search(limit.name)):
        window = int(named.group(1))
    return DescriptorStatus(
        limit=limit.requests_per_unit,
        window_seconds=window,
        remaining=status.limit_remaining,
        reset_seconds=-(-status.duration_until_reset.ToNanoseconds() // 1_000_000_000),
        over_limit=over,
    )
