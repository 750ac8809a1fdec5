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
counted (``hits_addend`` 1) and the backoff rules only checked (``hits_addend`` 0); a
refusal counts nothing. `LoginLimits.failed` counts a failure, `LoginLimits.succeeded`
clears the identity's failures (never the IP's).
"""

from collections.abc import MutableMapping
from typing import Any

from bulwark.common import rate_limits
from bulwark.common.logging import get_logger
from bulwark.common.ratelimit_client import RateLimitClient, RateLimitUnavailable

_log = get_logger(__name__)
_RESET = ("backoff", "reset")


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

    def _failure_descriptors(self) -> list[list[tuple[str, str]]]:
        return [
            [("endpoint", "login_failure"), ("email", self._email)],
            [("endpoint", "login_failure"), ("remote_address", self._ip)],
            [("endpoint", "login_failure"), ("remote_address", self._ip), ("email", self._email)],
        ]

    async def check(self) -> None:
        """Count the attempt and check the backoff, before the password is verified.

        Raises:
            TooManyRequests: over the attempt limit, or the identity or IP is blocked after
                failures, or this IP already failed on too many identities (429; nothing
                counted).
            ServiceUnavailable: the limiter cannot answer and login fails closed (503).
        """
        attempts = [
            [("endpoint", "login"), ("email", self._email)],
            [("endpoint", "login"), ("remote_address", self._ip)],
        ]
        failures = self._failure_descriptors()
        await rate_limits.enforce(
            self._client,
            [*attempts, *failures],
            hits_addend=[1] * len(attempts) + [0] * len(failures),
            fail_open=self._fail_open,
            request_state=self._request_state,
        )

    async def failed(self) -> None:
        """Count one failed login for the identity, the IP and the IP's distinct identities.

        A block this failure starts applies from the next attempt (this one is answered 401
        as usual). A limiter that cannot answer is logged, not raised: the client still gets
        its 401, and the failure goes uncounted.
        """
        try:
            decision = await self._client.should_rate_limit(self._failure_descriptors())
        except RateLimitUnavailable as exc:
            _log.warning("login_failure_not_counted", code=exc.code.name)
            return
        if not decision.allowed:
            _log.info("login_backoff_block", retry_after=decision.retry_after_seconds)

    async def succeeded(self) -> None:
        """Clear the identity's failures, block and strike count (a reset action); the IP's
        failures stay. A limiter that cannot answer is logged, not raised."""
        try:
            await self._client.should_rate_limit(
                [[("endpoint", "login_failure"), ("email", self._email), _RESET]]
            )
        except RateLimitUnavailable as exc:
            _log.warning("login_failures_not_cleared", code=exc.code.name)
