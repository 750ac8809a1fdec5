"""The rate-limit calls around one login (docs/ratelimit.md, "Backoff protocol"), with a
stand-in for the rate-limit client (no I/O)."""

from collections.abc import Sequence

import grpc
import pytest

from bulwark.auth.sessions.login_limits import LoginLimits
from bulwark.common.problems import TooManyRequests
from bulwark.common.ratelimit_client import (
    RateLimitDecision,
    RateLimitReport,
    RateLimitUnavailable,
)

pytestmark = pytest.mark.security(stride="S", asvs=("V2.4", "V6.3"))

Call = tuple[list[list[tuple[str, str]]], int | Sequence[int]]


class StandIn:
    """Records every call; answers allowed, refused, or as an unreachable service."""

    def __init__(self, *, allowed: bool = True, down: bool = False) -> None:
        self.allowed, self.down = allowed, down
        self.calls: list[Call] = []

    async def decide(
        self, descriptors: Sequence[Sequence[tuple[str, str]]], hits_addend: int | Sequence[int] = 1
    ) -> RateLimitReport:
        self.calls.append(([list(d) for d in descriptors], hits_addend))
        if self.down:
            raise RateLimitUnavailable(grpc.StatusCode.DEADLINE_EXCEEDED, "")
        return RateLimitReport(RateLimitDecision(self.allowed, 0 if self.allowed else 60, 0, 5), ())

    async def should_rate_limit(
        self, descriptors: Sequence[Sequence[tuple[str, str]]], hits_addend: int | Sequence[int] = 1
    ) -> RateLimitDecision:
        return (await self.decide(descriptors, hits_addend)).decision


def _limits(client: StandIn) -> LoginLimits:
    return LoginLimits(client, email="ann@example.com", ip="203.0.113.7", fail_open=False)  # type: ignore[arg-type]


async def test_check_counts_the_attempt_and_reserves_a_failure() -> None:
    client = StandIn()
    await _limits(client).check()
    [(descriptors, hits)] = client.calls
    assert descriptors == [
        [("endpoint", "login"), ("email", "ann@example.com")],
        [("endpoint", "login"), ("remote_address", "203.0.113.7")],
        [("endpoint", "login_failure"), ("email", "ann@example.com")],
        [("endpoint", "login_failure"), ("remote_address", "203.0.113.7")],
        [
            ("endpoint", "login_failure"),
            ("remote_address", "203.0.113.7"),
            ("email", "ann@example.com"),
        ],
    ]
    assert hits == [1, 1, 1, 1, 1]


async def test_a_block_refuses_before_the_password_check() -> None:
    with pytest.raises(TooManyRequests):
        await _limits(StandIn(allowed=False)).check()


async def test_a_success_resets_the_identity_and_refunds_the_ip() -> None:
    client = StandIn()
    await _limits(client).succeeded()
    failure = ("endpoint", "login_failure")
    ip, email = ("remote_address", "203.0.113.7"), ("email", "ann@example.com")
    assert client.calls == [
        (
            [
                [failure, email, ("backoff", "reset")],
                [failure, ip, ("backoff", "refund")],
                [failure, ip, email, ("backoff", "refund")],
            ],
            1,
        )
    ]


async def test_an_unreachable_limiter_after_the_password_check_is_logged_not_raised() -> None:
    client = StandIn(down=True)
    await _limits(client).succeeded()
    assert len(client.calls) == 1
    await _limits(client).abandoned()
    assert len(client.calls) == 2


async def test_an_abandoned_login_refunds_its_reservation_and_keeps_earlier_failures() -> None:
    """A login that ended before its password check could fail (the database down, a
    cancelled request) gives back all that `check` counted, the attempt too: refunds, never
    a reset (the identity's earlier failures stay)."""
    client = StandIn()
    await _limits(client).abandoned()
    failure = ("endpoint", "login_failure")
    ip, email = ("remote_address", "203.0.113.7"), ("email", "ann@example.com")
    attempt = ("endpoint", "login")
    assert client.calls == [
        (
            [
                [attempt, email, ("backoff", "refund")],
                [attempt, ip, ("backoff", "refund")],
                [failure, email, ("backoff", "refund")],
                [failure, ip, ("backoff", "refund")],
                [failure, ip, email, ("backoff", "refund")],
            ],
            1,
        )
    ]
