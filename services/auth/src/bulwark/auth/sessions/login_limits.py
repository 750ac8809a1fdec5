"""The limits around one login: the attempt limit and the failure backoff.

Descriptors of domain ``bulwark-auth`` (rules in the rate-limit service's ``rules.yaml``;
protocol in docs/ratelimit.md, "Backoff protocol"):

- ``endpoint=login`` + ``email`` / ``remote_address``: every attempt counts (5 per email
  and 300 per IP per 15 minutes by default), successful ones too;
- ``endpoint=login_failure`` + ``email`` / ``remote_address``: failed logins only; too many
  start a block that doubles on each repeat;
- ``endpoint=login_failure`` + ``remote_address`` + ``email``: distinct identities that
  failed from one IP (credential stuffing).

`LoginLimits.check` runs before the password is verified, in one call: the attempt is
counted and a failure is *reserved* in each failure rule (every ``hits_addend`` 1), so
logins racing in parallel from one IP are judged one after the other by Redis, not all
against the same count; a refusal counts nothing. The reservation becomes a failure only
when the password check ran and failed. `LoginLimits.succeeded` gives it back and clears the
identity's failures; `LoginLimits.abandoned` gives it back, the attempt too, for every
other ending (a server error, a timeout, a cancelled request), so an outage never counts
against the users it turned away.
"""

from collections.abc import MutableMapping
from typing import Any

from bulwark.common import rate_limits
from bulwark.common.logging import get_logger
from bulwark.common.metrics import count_login_failure
from bulwark.common.problems import ServiceUnavailable, TooManyRequests
from bulwark.common.ratelimit_client import RateLimitClient, RateLimitUnavailable

_log = get_logger(__name__)
_RESET = ("backoff", "reset")
_REFUND = ("backoff", "refund")


class LoginLimits:
    """The rate-limit calls of one login attempt by ``email`` (normalised) from ``ip``."""

    def __init__(
        self,
        client: RateLimitClient,
        *,
        email: str,
        ip: str,
        fail_open: bool,
        request_state: MutableMapping[str, Any] | None = None,
    ) -> None:
        """``fail_open`` is the login endpoint's failure mode; ``request_state`` (the
        request's ``scope["state"]``) receives the RateLimit fields of the check."""
        self._client = client
        self._email, self._ip = email, ip
        self._fail_open = fail_open
        self._request_state = request_state

    def _attempt_descriptors(self) -> list[list[tuple[str, str]]]:
        return [
            [("endpoint", "login"), ("email", self._email)],
            [("endpoint", "login"), ("remote_address", self._ip)],
        ]

    def _failure_descriptors(self) -> list[list[tuple[str, str]]]:
        return [
            [("endpoint", "login_failure"), ("email", self._email)],
            [("endpoint", "login_failure"), ("remote_address", self._ip)],
            [("endpoint", "login_failure"), ("remote_address", self._ip), ("email", self._email)],
        ]

    async def check(self) -> None:
        """Count the attempt and reserve a failure, before the password is verified.

        Raises:
            TooManyRequests: over the attempt limit, or the identity or IP is blocked after
                failures (or this reservation started the block), or this IP already failed
                on too many identities (429; nothing counted unless a block started).
            ServiceUnavailable: the limiter cannot answer and login fails closed (503).
        """
        descriptors = [*self._attempt_descriptors(), *self._failure_descriptors()]
        try:
            await rate_limits.enforce(
                self._client,
                descriptors,
                hits_addend=[1] * len(descriptors),
                fail_open=self._fail_open,
                request_state=self._request_state,
            )
        except TooManyRequests:
            count_login_failure("rate_limited")
            raise
        except ServiceUnavailable:
            count_login_failure("ratelimit_unavailable")
            raise

    async def succeeded(self) -> None:
        """Give back the failure reserved by `check`: clear the identity's failures, block
        and strike count (a reset action), refund one of the IP's failures and take the
        identity out of the IP's distinct identities (refund actions); the IP's other
        failures stay. The response's RateLimit fields keep the attempt limits only (the
        check's failure counts are stale now). A limiter that cannot answer is logged, not
        raised."""
        if self._request_state is not None:
            rate_limits.drop_fields(self._request_state, "login_failure-")
        await self._give_back(_RESET, unanswered_event="login_failures_not_cleared")

    async def abandoned(self) -> None:
        """Give back all that `check` counted when the login ended before its password
        check could fail (a 5xx, a timeout, a cancellation): the attempt at the email and at
        the IP, one failure of each, and the identity's entry among the IP's distinct
        identities (refund actions; docs/ratelimit.md, "Backoff protocol"). A user who
        retries through an outage is not locked out after it. A limiter that cannot answer
        is logged, not raised."""
        attempts = [[*entries, _REFUND] for entries in self._attempt_descriptors()]
        await self._give_back(_REFUND, also=attempts, unanswered_event="login_failure_not_refunded")

    async def _give_back(
        self,
        identity_action: tuple[str, str],
        *,
        also: list[list[tuple[str, str]]] | None = None,
        unanswered_event: str,
    ) -> None:
        """One call: ``identity_action`` on the identity's failures, a refund of the IP's
        reservation and of its distinct-identity entry, and the actions in ``also``."""
        email_rule, ip_rule, distinct_rule = self._failure_descriptors()
        actions = [[*email_rule, identity_action], [*ip_rule, _REFUND], [*distinct_rule, _REFUND]]
        try:
            await self._client.should_rate_limit([*(also or []), *actions])
        except RateLimitUnavailable as exc:
            _log.warning(unanswered_event, code=exc.code.name)
