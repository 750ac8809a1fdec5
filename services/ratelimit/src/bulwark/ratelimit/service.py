"""``envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`` over the sliding window.

Errors are raised, not reported: the server's interceptor turns `InvalidRequestError` into
INVALID_ARGUMENT and `LimiterUnavailableError` (Redis down or slow) into UNAVAILABLE.
"""

from typing import Any

from envoy.service.ratelimit.v3 import rls_pb2

from bulwark.common.logging import get_logger
from bulwark.ratelimit.rules import Entries, RateLimit, Rules, redis_key
from bulwark.ratelimit.sliding_window import Hit, SlidingWindowLimiter

log = get_logger(__name__)

# Bounds on hostile input; a request beyond them is INVALID_ARGUMENT.
MAX_DOMAIN_LENGTH = 128
MAX_DESCRIPTORS = 16
MAX_ENTRIES = 8
MAX_KEY_LENGTH = 128
MAX_VALUE_LENGTH = 1024
MAX_HITS_ADDEND = 1000

_Response = rls_pb2.RateLimitResponse
_UNITS = {
    1: _Response.RateLimit.SECOND,
    60: _Response.RateLimit.MINUTE,
    3600: _Response.RateLimit.HOUR,
    86400: _Response.RateLimit.DAY,
}


class InvalidRequestError(ValueError):
    """The request is malformed or exceeds a bound; the message says which."""


def parse_request(request: Any) -> list[tuple[Entries, int]]:
    """Validate a ``RateLimitRequest`` and return ``(entries, hits_addend)`` per descriptor.

    A descriptor's own ``hits_addend`` (a wrapper, so 0 can be told from unset) wins over the
    request's; an unset or 0 request-level ``hits_addend`` means 1, as in Envoy. The
    descriptors' ``limit`` overrides are ignored: limits come only from the rules file.

    Raises:
        InvalidRequestError: empty or too long domain; no descriptors or more than
            `MAX_DESCRIPTORS`; a descriptor with no entries or more than `MAX_ENTRIES`; an empty
            or too long entry key or value; ``hits_addend`` above `MAX_HITS_ADDEND`.
    """
    if not request.domain or len(request.domain) > MAX_DOMAIN_LENGTH:
        raise InvalidRequestError(f"domain must be 1 to {MAX_DOMAIN_LENGTH} characters")
    if not 1 <= len(request.descriptors) <= MAX_DESCRIPTORS:
        raise InvalidRequestError(f"descriptors must hold 1 to {MAX_DESCRIPTORS} descriptors")
    default_hits = request.hits_addend or 1
    parsed: list[tuple[Entries, int]] = []
    for index, descriptor in enumerate(request.descriptors):
        if not 1 <= len(descriptor.entries) <= MAX_ENTRIES:
            raise InvalidRequestError(f"descriptors[{index}] must hold 1 to {MAX_ENTRIES} entries")
        for entry in descriptor.entries:
            if not 1 <= len(entry.key) <= MAX_KEY_LENGTH:
                raise InvalidRequestError(
                    f"descriptors[{index}]: entry keys are 1 to 128 characters"
                )
            if not 1 <= len(entry.value) <= MAX_VALUE_LENGTH:
                raise InvalidRequestError(
                    f"descriptors[{index}]: entry values are 1 to {MAX_VALUE_LENGTH} characters"
                )
        hits = descriptor.hits_addend.value if descriptor.HasField("hits_addend") else default_hits
        if hits > MAX_HITS_ADDEND:
            raise InvalidRequestError(f"hits_addend must be at most {MAX_HITS_ADDEND}")
        parsed.append(([(e.key, e.value) for e in descriptor.entries], hits))
    return parsed


def describe_limit(limit: RateLimit) -> Any:
    """Return the ``RateLimitResponse.RateLimit`` message for ``limit``.

    ``unit`` is SECOND, MINUTE, HOUR or DAY when the window is exactly one of them, else
    UNKNOWN; ``name`` always states the window, e.g. ``"5 per 900s"``.
    """
    return _Response.RateLimit(
        name=limit.name,
        requests_per_unit=limit.requests,
        unit=_UNITS.get(limit.window_seconds, _Response.RateLimit.UNKNOWN),
    )


class RateLimitService:
    """Implementation of Envoy's ``RateLimitService`` (RLS v3) for ``grpc.aio``."""

    def __init__(self, rules: Rules, limiter: SlidingWindowLimiter, key_prefix: str) -> None:
        """Judge requests against ``rules``, counting in ``limiter`` under ``key_prefix``."""
        self._rules = rules
        self._limiter = limiter
        self._prefix = key_prefix

    async def ShouldRateLimit(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC name
        """Answer one ``RateLimitRequest`` with a ``RateLimitResponse``.

        ``overall_code`` is OVER_LIMIT when any descriptor is over its limit (then no
        descriptor's hits were counted), else OK. Unlimited descriptors and every descriptor
        of an unknown domain are OK without a ``current_limit``.

        Raises:
            InvalidRequestError: see `parse_request`.
            LimiterUnavailableError: Redis failed or timed out.
        """
        descriptors = parse_request(request)
        domain: str = request.domain
        if not self._rules.has_domain(domain):
            log.warning("unknown_domain", domain=domain)
        matched = [
            (self._rules.match(domain, entries), entries, hits) for entries, hits in descriptors
        ]
        hits = [
            Hit(redis_key(self._prefix, domain, entries), limit, count)
            for limit, entries, count in matched
            if limit is not None
        ]
        states = iter(await self._limiter.hit(hits))
        response = _Response(overall_code=_Response.OK)
        for limit, _entries, _hits in matched:
            status = response.statuses.add(code=_Response.OK)
            if limit is None:
                continue
            state = next(states)
            if state.over_limit:
                status.code = response.overall_code = _Response.OVER_LIMIT
            status.current_limit.CopyFrom(describe_limit(limit))
            status.limit_remaining = state.remaining
            status.duration_until_reset.FromMilliseconds(state.reset_ms)
        return response
