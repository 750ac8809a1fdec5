"""Client of the rate-limit service (Envoy RLS v3 ``ShouldRateLimit`` over gRPC).

Used by the HTTP services' middleware. Whether to fail open or closed when the service is
unavailable is the caller's decision: this client only raises `RateLimitUnavailable`.
"""

import hashlib
from collections.abc import Sequence

import grpc
import msgspec
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

_Response = rls_pb2.RateLimitResponse
# The service rejects longer entry values (INVALID_ARGUMENT); rule values are never longer.
MAX_VALUE_LENGTH = 1024


class RateLimitDecision(msgspec.Struct, frozen=True):
    """The answer for one request.

    Attributes:
        allowed: no descriptor was over its limit (and the hits were counted).
        retry_after_seconds: when denied, whole seconds until enough hits leave the window
            for the request to fit (at least 1); 0 when allowed. Suits ``Retry-After``.
        remaining: the smallest ``limit_remaining`` among limited descriptors, or None when
            none is limited.
        limit: the ``requests_per_unit`` of the descriptor that gave ``remaining``, or None.
    """

    allowed: bool
    retry_after_seconds: int
    remaining: int | None
    limit: int | None


class RateLimitUnavailable(Exception):  # noqa: N818 - name fixed by the shared contract
    """The service could not be reached or answered an error in time.

    ``code`` is the gRPC status (DEADLINE_EXCEEDED, UNAVAILABLE, INVALID_ARGUMENT, ...).
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        """Keep the gRPC ``code`` and ``details`` of the failure."""
        super().__init__(f"rate-limit service: {code.name}: {details}")
        self.code = code


class RateLimitClient:
    """Asks the rate-limit service about one ``domain`` (e.g. ``bulwark-auth``).

    The gRPC channel is created on first use, inside the running event loop.
    """

    def __init__(self, target: str, domain: str, timeout_seconds: float = 0.1) -> None:
        """Talk to ``target`` (``host:port``) with a deadline of ``timeout_seconds`` per call."""
        self._target = target
        self._domain = domain
        self._timeout = timeout_seconds
        self._channel: grpc.aio.Channel | None = None
        self._stub: rls_pb2_grpc.RateLimitServiceStub | None = None

    async def should_rate_limit(
        self, descriptors: Sequence[Sequence[tuple[str, str]]], hits_addend: int = 1
    ) -> RateLimitDecision:
        """Count ``hits_addend`` hits against every descriptor, unless one is over its limit.

        Args:
            descriptors: one list of ``(key, value)`` entries per descriptor, e.g.
                ``[[("endpoint", "login"), ("email", email)]]``. Values longer than
                `MAX_VALUE_LENGTH` characters are sent as their SHA-256 digest.
            hits_addend: hits to count (>= 0). 0 only checks: denied when one more hit would
                not fit.

        Raises:
            RateLimitUnavailable: the call failed or exceeded the deadline, or the request was
                rejected (INVALID_ARGUMENT).
            ValueError: ``hits_addend`` is negative.
        """
        if hits_addend < 0:
            raise ValueError("hits_addend must be >= 0")
        request = rls_pb2.RateLimitRequest(domain=self._domain, hits_addend=max(hits_addend, 1))
        for entries in descriptors:
            descriptor = request.descriptors.add()
            # Set per descriptor as well: the wrapper type is the only way to send an explicit 0.
            descriptor.hits_addend.value = hits_addend
            for key, value in entries:
                descriptor.entries.append(
                    ratelimit_pb2.RateLimitDescriptor.Entry(key=key, value=_bounded(value))
                )
        try:
            response = await self._get_stub().ShouldRateLimit(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise RateLimitUnavailable(exc.code(), exc.details() or "") from exc
        return _decision(response)

    def _get_stub(self) -> rls_pb2_grpc.RateLimitServiceStub:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self._target)
            self._stub = rls_pb2_grpc.RateLimitServiceStub(self._channel)
        return self._stub

    async def close(self) -> None:
        """Close the channel; a later call opens a new one."""
        if self._channel is not None:
            await self._channel.close(grace=None)
        self._channel = self._stub = None


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
    return RateLimitDecision(
        allowed=response.overall_code == _Response.OK,
        retry_after_seconds=retry_after,
        remaining=None if tightest is None else tightest.limit_remaining,
        limit=None if tightest is None else tightest.current_limit.requests_per_unit,
    )
