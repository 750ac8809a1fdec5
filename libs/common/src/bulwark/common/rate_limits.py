"""Applying a rate-limit decision to an HTTP request: headers, 429, or the failure mode.

Every call reports the decision to the client in the IETF RateLimit header fields (put in
``scope["state"]["response_headers"]``, which ``RequestContextMiddleware`` adds to the
response, a 429 or any other). A 429 carries ``Retry-After``: the limiter's exact wait, which
is the latest reset (``t``) of the limits that refused it, never later. A 503 (the limiter
unreachable) carries a jittered one, so clients refused together do not return together.

When the rate-limit service cannot answer in time, each endpoint has its own failure mode
(a table in its service's settings): fail open (serve the request; limits that protect
capacity) or fail closed (503; login, where an unlimited window is an open door for
credential stuffing). See README, "Rate limiter unreachable".
"""

import secrets
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any, Literal

from bulwark.common.logging import get_logger
from bulwark.common.metrics import count_ratelimit_call, count_ratelimit_unanswered
from bulwark.common.problems import ServiceUnavailable, TooManyRequests
from bulwark.common.ratelimit_client import (
    RateLimitClient,
    RateLimitDecision,
    RateLimitReport,
    RateLimitUnavailable,
)

FailureMode = Literal["allow", "deny"]
Descriptors = Sequence[Sequence[tuple[str, str]]]
#: ``Retry-After`` of the 503 answered when a ``deny`` endpoint cannot reach the limiter.
UNAVAILABLE_RETRY_AFTER_SECONDS = 5
_log = get_logger(__name__)


def jittered(seconds: int, randbelow: Callable[[int], int] = secrets.randbelow) -> int:
    """``seconds`` plus 0 to 10 % (at least 0 to 1 s), so clients refused together spread out.

    Args:
        seconds: the exact wait (whole seconds; below 1 counts as 1).
        randbelow: ``randbelow(n)`` draws from ``0 .. n-1`` (injectable for tests).

    Returns:
        A value in ``[s, s + max(1, ceil(s / 10))]`` where ``s = max(1, seconds)``: never
        earlier than the limit allows.
    """
    base = max(1, seconds)
    spread = max(1, -(-base // 10))
    return base + randbelow(spread + 1)


def policy_name(entries: Sequence[tuple[str, str]]) -> str:
    """A descriptor's policy name for the RateLimit fields, without its (personal) values.

    ``[("endpoint", "login"), ("email", "a@b.c")]`` gives ``"login-email"``; the value of
    an ``endpoint`` entry is kept, every other entry contributes its key only.
    """
    return "-".join(value if key == "endpoint" else key for key, value in entries) or "default"


def ratelimit_fields(descriptors: Descriptors, report: RateLimitReport) -> dict[str, str]:
    """The ``RateLimit-Policy`` and ``RateLimit`` fields for ``report`` (empty if no limit).

    Syntax of draft-ietf-httpapi-ratelimit-headers-10 (September 2025; unchanged since -08):
    both fields are Structured Field Lists (RFC 9651) of quoted policy names with
    parameters. ``RateLimit-Policy: "login-email";q=5;w=900`` gives the quota ``q`` per
    window ``w`` (seconds; left out when unknown); ``RateLimit: "login-email";r=4;t=900``
    gives the remaining quota ``r`` and the seconds ``t`` until it resets. One member per
    limited descriptor, in request order; no partition key (it would echo an email or IP).
    """
    policies: list[str] = []
    current: list[str] = []
    for entries, status in zip(descriptors, report.statuses, strict=False):
        if status.limit is None:
            continue
        name = policy_name(entries).replace("\\", "").replace('"', "")
        window = f";w={status.window_seconds}" if status.window_seconds else ""
        policies.append(f'"{name}";q={status.limit}{window}')
        current.append(f'"{name}";r={max(0, status.remaining)};t={max(0, status.reset_seconds)}')
    if not policies:
        return {}
    return {"RateLimit-Policy": ", ".join(policies), "RateLimit": ", ".join(current)}


def drop_fields(request_state: MutableMapping[str, Any], policy_prefix: str) -> None:
    """Take the members whose policy name starts with ``policy_prefix`` (``"login_failure-"``)
    out of the RateLimit fields set for this request's response by `enforce`.

    For counts that the rest of the request made stale: a successful login clears the
    failures its check reported."""
    headers: dict[bytes, bytes] = request_state.get("response_headers", {})
    for name in (b"ratelimit-policy", b"ratelimit"):
        if (value := headers.get(name)) is None:
            continue
        kept = [m for m in value.decode().split(", ") if not m.startswith(f'"{policy_prefix}')]
        if kept:
            headers[name] = ", ".join(kept).encode()
        else:
            del headers[name]


def _unavailable() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The service is temporarily unavailable; retry shortly.",
        {"Retry-After": str(jittered(UNAVAILABLE_RETRY_AFTER_SECONDS))},
    )


async def enforce(
    client: RateLimitClient,
    descriptors: Descriptors,
    *,
    fail_open: bool,
    request_state: MutableMapping[str, Any] | None = None,
    hits_addend: int | Sequence[int] = 1,
) -> RateLimitDecision | None:
    """Count ``hits_addend`` hits against ``descriptors`` (Envoy RLS entries); raise if refused.

    Args:
        client: the service's rate-limit client.
        descriptors: one list of ``(key, value)`` entries per descriptor.
        fail_open: the endpoint's failure mode is ``allow``.
        request_state: the request's ``scope["state"]``; when given, the RateLimit fields
            of the decision are set for its response (see `ratelimit_fields`).
        hits_addend: hits to count, for all descriptors or one per descriptor; 0 only
            checks (see `RateLimitClient.should_rate_limit`).

    Returns:
        The decision, or None when the limiter was unavailable and ``fail_open`` is true.

    Raises:
        TooManyRequests: a limit is exhausted (429; ``Retry-After`` is the limiter's wait,
            the largest ``t`` of the refusing limits in the RateLimit field).
        ServiceUnavailable: the limiter is unreachable and ``fail_open`` is false, or its
            Redis failed and a rule's ``failure_mode`` is ``deny`` (503 either way).
    """
    count_ratelimit_call()
    try:
        report = await client.decide(descriptors, hits_addend=hits_addend)
    except RateLimitUnavailable as exc:
        _log.warning("ratelimit_unavailable", fail_open=fail_open, code=exc.code.name)
        count_ratelimit_unanswered(exc.code.name)
        if fail_open:
            return None
        raise _unavailable() from None
    if report.decision.failure_mode_applied:
        # The limiter's Redis failed and the rules' failure modes answered: counted and
        # logged whichever way they went (an allow is a request no limit judged).
        mode = "allow" if report.decision.allowed else "deny"
        _log.warning("ratelimit_store_unavailable", failure_mode=mode)
        count_ratelimit_unanswered("FAILURE_MODE")
        if not report.decision.allowed:
            # Fail closed while the limiter's Redis is down: an outage (503), not a client
            # that sent too much (429), and no RateLimit fields to report.
            raise _unavailable()
    if request_state is not None:
        headers: dict[bytes, bytes] = request_state.setdefault("response_headers", {})
        for name, value in ratelimit_fields(descriptors, report).items():
            headers[name.lower().encode()] = value.encode()
    decision = report.decision
    if not decision.allowed:
        # The limiter's exact wait: the latest reset (``t``) among the refusing limits in the
        # RateLimit field, never past it. No jitter on top: it would point past the window.
        raise TooManyRequests(decision.retry_after_seconds)
    return decision
