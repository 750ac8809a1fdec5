"""``envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`` over the rule algorithms.

Bad requests are raised, not reported: the server's interceptor turns `InvalidRequestError`
into INVALID_ARGUMENT. Redis failures (down, slow, connection lost) are answered by each
matched rule's ``failure_mode``: ``allow`` rules (the default) OK, ``deny`` rules OVER_LIMIT.
"""

import hashlib
import time
from collections.abc import Sequence
from typing import Any, Protocol

from envoy.service.ratelimit.v3 import rls_pb2

from bulwark.common.logging import get_logger
from bulwark.common.metrics import DecisionResult, count_ratelimit_decision
from bulwark.common.ratelimit_client import FAILURE_MODE_APPLIED
from bulwark.ratelimit.cache import OverLimitCache
from bulwark.ratelimit.limiter import Hit, LimiterUnavailableError, WindowState
from bulwark.ratelimit.rules import Entries, Match, Policy, RateLimit, Rules, redis_key

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


_KEY_SUFFIX = {"sliding_log": "", "sliding_counter": ":c", "distinct": ":d", "backoff": ":b"}
_CACHEABLE = frozenset({"sliding_log", "sliding_counter", "backoff"})


def key_for(prefix: str, domain: str, match: Match) -> tuple[str, str]:
    """Return ``(redis key, member)`` for a matched descriptor.

    Each algorithm has its own key suffix, so a rule whose algorithm changes on reload never
    meets a Redis value of another type. A ``distinct`` rule's key is that of the descriptor
    without its last entry (e.g. the IP), and the member counted is a SHA-256 digest of the
    last entry's value (128 bits, hex): the set must tell values apart, not hold the emails an
    IP tried, which would be a gift to anyone who can read Redis.
    """
    entries: Entries = match.entries
    member = ""
    if match.policy.kind == "distinct":
        member = hashlib.sha256(entries[-1][1].encode()).hexdigest()[:32]
        entries = entries[:-1]
    return redis_key(prefix, domain, entries) + _KEY_SUFFIX[match.policy.kind], member


def _policy(hit: Hit) -> Policy:
    """The policy of a hit built by `RateLimitService` (always set there)."""
    assert hit.policy is not None  # noqa: S101 - invariant of ShouldRateLimit
    return hit.policy


def _count_decisions(
    domain: str,
    checks: Sequence[Hit],
    states: Sequence[WindowState | None],
    *,
    failed: bool = False,
) -> None:
    """Count each judged descriptor in ``bulwark_ratelimit_decisions_total`` by its rule's
    name (`Policy.name`) and result; actions and descriptors not judged are no decisions.
    ``failed``: Redis failed and the rules' ``failure_mode`` gave ``states``."""
    for check, state in zip(checks, states, strict=True):
        if state is None or check.action:
            continue
        policy = _policy(check)
        result: DecisionResult
        if failed:
            denied = state.over_limit and not policy.shadow_mode
            result = "failure_denied" if denied else "failure_allowed"
        elif state.over_limit:
            result = "shadow_over_limit" if policy.shadow_mode else "over_limit"
        else:
            result = "ok"
        count_ratelimit_decision(domain, policy.name, result)


class HitLimiter(Protocol):
    """What the service counts with: `Limiter`, or a wrapper of it (cluster, block recorder)."""

    async def hit(self, hits: Sequence[Hit]) -> list[WindowState]:
        """One `WindowState` per hit; raises `LimiterUnavailableError`."""


class RateLimitService:
    """Implementation of Envoy's ``RateLimitService`` (RLS v3) for ``grpc.aio``."""

    def __init__(
        self,
        rules: Rules,
        limiter: HitLimiter,
        key_prefix: str,
        cache: OverLimitCache | None = None,
    ) -> None:
        """Judge requests against ``rules``, counting in ``limiter`` under ``key_prefix``.

        ``cache`` holds keys known to be over their limit (see `OverLimitCache`); None turns
        the local cache off, so every request goes to Redis.
        """
        self._rules = rules
        self._limiter = limiter
        self._prefix = key_prefix
        self._cache = cache

    @property
    def rules(self) -> Rules:
        """The rules in force."""
        return self._rules

    def set_rules(self, rules: Rules) -> None:
        """Put ``rules`` in force for the next request (hot reload); clears the local cache."""
        self._rules = rules
        if self._cache is not None:
            self._cache.clear()

    async def ShouldRateLimit(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC name
        """Answer one ``RateLimitRequest`` with a ``RateLimitResponse``.

        ``overall_code`` is OVER_LIMIT when any descriptor is over its limit (then no
        descriptor's hits were counted), else OK; a ``backoff`` descriptor is also
        OVER_LIMIT when this failure started a block (then the hits were counted). Unlimited
        descriptors, reset and refund actions and every descriptor of an unknown domain are OK
        without a ``current_limit``; shadow rules are always OK. A key in the local over-limit
        cache is answered OVER_LIMIT without Redis (the other descriptors OK without a limit). When
        Redis fails or times out, ``allow`` rules are OK and ``deny`` rules OVER_LIMIT.

        Raises:
            InvalidRequestError: see `parse_request`.
        """
        descriptors = parse_request(request)
        domain: str = request.domain
        rules = self._rules
        if not rules.has_domain(domain):
            log.warning("unknown_domain", domain=domain)
        matched = [rules.resolve(domain, entries) for entries, _hits in descriptors]
        checks: list[Hit] = []
        for match, (_entries, hits) in zip(matched, descriptors, strict=True):
            if match is not None:
                key, member = key_for(self._prefix, domain, match)
                policy = match.policy
                checks.append(Hit(key, policy.limit, hits, policy, member, match.action))
        states = self._from_cache(checks)
        failed = False
        if states is None:
            states, failed = await self._decide(domain, checks)
        else:
            _count_decisions(domain, checks, states)
        response = _Response(overall_code=_Response.OK)
        if failed:  # tells our callers a failure-mode deny from an exhausted limit
            response.dynamic_metadata.update({FAILURE_MODE_APPLIED: True})
        results = iter(zip(checks, states, strict=True))
        for match in matched:
            status = response.statuses.add(code=_Response.OK)
            if match is None:
                continue
            check, state = next(results)
            if state is None or check.action:
                continue  # an action, or not judged: another key was over its limit in the cache
            if state.over_limit and _policy(check).shadow_mode:
                log.info("shadow_over_limit", domain=domain, rule=_policy(check).limit.name)
            elif state.over_limit:
                status.code = response.overall_code = _Response.OVER_LIMIT
            status.current_limit.CopyFrom(describe_limit(_policy(check).limit))
            status.limit_remaining = state.remaining
            status.duration_until_reset.FromMilliseconds(state.reset_ms)
        return response

    def _from_cache(self, checks: list[Hit]) -> list[WindowState | None] | None:
        """Answer from the local cache when every judged key is known to be over its limit.

        Returns None when Redis must be asked, else one OVER_LIMIT state per check (None for
        shadow rules, reported as OK). A request with one key not in the cache goes to Redis,
        which judges them all: answering from the cache then would report only the cached
        reset times and understate ``Retry-After`` when another limit runs longer.
        """
        if self._cache is None:
            return None
        cache = self._cache
        now = time.monotonic()
        states: list[WindowState | None] = []
        for check in checks:
            if check.action:
                cache.discard(check.key)
                return None
            if _policy(check).shadow_mode:
                states.append(None)
                continue
            left = cache.remaining_ms(check.key, now)
            if not left:
                return None
            states.append(WindowState(True, 0, left))
        return states if any(state is not None for state in states) else None

    async def _decide(
        self, domain: str, checks: list[Hit]
    ) -> tuple[list[WindowState | None], bool]:
        """Ask Redis; on failure answer by each rule's ``failure_mode``.

        Returns one state per check, and whether Redis failed (the failure modes answered).
        """
        try:
            states = await self._limiter.hit(checks)
        except LimiterUnavailableError:
            log.warning("failure_mode_applied", domain=domain)
            answers: list[WindowState | None] = [
                WindowState(_policy(c).failure_mode == "deny" and not c.action, 0, 0)
                for c in checks
            ]
            _count_decisions(domain, checks, answers, failed=True)
            return answers, True
        if self._cache is not None:
            for check, state in zip(checks, states, strict=True):
                if (
                    state.over_limit
                    and state.reset_ms > 0
                    and check.hits_addend <= 1
                    and _policy(check).kind in _CACHEABLE
                    and not _policy(check).shadow_mode
                ):
                    self._cache.add(check.key, state.reset_ms)
        _count_decisions(domain, checks, states)
        return list(states), False
