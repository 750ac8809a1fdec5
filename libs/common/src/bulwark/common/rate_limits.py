"""Applying a rate-limit decision to an HTTP request: 429, or the failure mode.

When the rate-limit service cannot answer in time, each caller chooses: fail open (serve the
request; used by the resource API, whose limits protect capacity) or fail closed (503; used
by login, where an unlimited window is an open door for credential stuffing).
"""

from collections.abc import Sequence

from bulwark.common.logging import get_logger
from bulwark.common.problems import ServiceUnavailable, TooManyRequests
from bulwark.common.ratelimit_client import RateLimitClient, RateLimitUnavailable

_log = get_logger(__name__)


async def enforce(
    client: RateLimitClient,
    descriptors: Sequence[Sequence[tuple[str, str]]],
    *,
    fail_open: bool,
) -> None:
    """Count one hit against ``descriptors`` (Envoy RLS entries); raise if it is refused.

    Raises:
        TooManyRequests: a limit is exhausted (429 with Retry-After).
        ServiceUnavailable: the limiter is unreachable and ``fail_open`` is false (503).
    """
    try:
        decision = await client.should_rate_limit(descriptors)
    except RateLimitUnavailable:
        _log.warning("ratelimit_unavailable", fail_open=fail_open)
        if fail_open:
            return
        raise ServiceUnavailable(
            "The service is temporarily unavailable; retry shortly.", {"Retry-After": "5"}
        ) from None
    if not decision.allowed:
        raise TooManyRequests(decision.retry_after_seconds)
