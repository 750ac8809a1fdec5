"""Rate-limit decisions applied to a request: RateLimit fields, 429 with jitter, failure modes.

A stand-in replaces the gRPC client (no I/O); the client's own parsing is tested from real
protobuf responses.
"""

from collections.abc import Sequence

import grpc
import pytest
from envoy.service.ratelimit.v3 import rls_pb2

from bulwark.common.problems import ServiceUnavailable, TooManyRequests
from bulwark.common.rate_limits import enforce, jittered, policy_name, ratelimit_fields
from bulwark.common.ratelimit_client import (
    DescriptorStatus,
    RateLimitClient,
    RateLimitDecision,
    RateLimitReport,
    RateLimitUnavailable,
    _decision,
    _status,
)

pytestmark = pytest.mark.security(stride="D", asvs=("V2.4",))

_Response = rls_pb2.RateLimitResponse
LOGIN = [
    [("endpoint", "login"), ("email", "ann@example.com")],
    [("endpoint", "login"), ("remote_address", "203.0.113.7")],
]


class StandIn:
    """Answers ``decide`` with a fixed report, or as an unreachable service."""

    def __init__(self, report: RateLimitReport | None) -> None:
        self.report = report
        self.hits_addend: list[int | Sequence[int]] = []

    async def decide(
        self, descriptors: Sequence[Sequence[tuple[str, str]]], hits_addend: int | Sequence[int] = 1
    ) -> RateLimitReport:
        self.hits_addend.append(hits_addend)
        if self.report is None:
            raise RateLimitUnavailable(grpc.StatusCode.UNAVAILABLE, "connection refused")
        return self.report


def _decided(*, allowed: bool, email_remaining: int, retry_after: int = 0) -> RateLimitReport:
    return RateLimitReport(
        RateLimitDecision(
            allowed=allowed, retry_after_seconds=retry_after, remaining=email_remaining, limit=5
        ),
        (
            DescriptorStatus(5, 900, email_remaining, 840, over_limit=not allowed),
            DescriptorStatus(300, None, 250, 899, over_limit=False),
        ),
    )


def test_jitter_adds_up_to_ten_percent_and_at_least_one_second_of_spread() -> None:
    assert {jittered(3, lambda n: n - 1), jittered(3, lambda _n: 0)} == {4, 3}
    assert jittered(0, lambda _n: 0) == 1  # never "retry now"
    assert jittered(900, lambda n: n - 1) == 990
    drawn = {jittered(100) for _ in range(400)}
    assert drawn <= set(range(100, 111))
    assert len(drawn) > 5  # spread, not one value


@pytest.mark.security(stride="I", asvs=("V14.2",))
def test_policy_names_keep_the_endpoint_and_drop_personal_values() -> None:
    assert [policy_name(d) for d in LOGIN] == ["login-email", "login-remote_address"]
    assert policy_name([("user_id", "u-1")]) == "user_id"


def test_ratelimit_fields_use_the_structured_field_syntax() -> None:
    fields = ratelimit_fields(LOGIN, _decided(allowed=True, email_remaining=3))
    assert fields == {
        "RateLimit-Policy": '"login-email";q=5;w=900, "login-remote_address";q=300',
        "RateLimit": '"login-email";r=3;t=840, "login-remote_address";r=250;t=899',
    }
    unlimited = RateLimitReport(
        RateLimitDecision(True, 0, None, None), (DescriptorStatus(None, None, 0, 0, False),)
    )
    assert ratelimit_fields([[("endpoint", "x")]], unlimited) == {}


async def test_an_allowed_request_gets_the_fields_and_the_decision() -> None:
    state: dict[str, object] = {}
    decision = await enforce(
        StandIn(_decided(allowed=True, email_remaining=4)),  # type: ignore[arg-type]
        LOGIN,
        fail_open=False,
        request_state=state,
    )
    assert decision is not None
    assert decision.allowed
    headers = state["response_headers"]
    assert isinstance(headers, dict)
    assert headers[b"ratelimit"].startswith(b'"login-email";r=4;t=840')
    assert b"ratelimit-policy" in headers


async def test_a_refusals_retry_after_never_points_past_the_reset_it_reports() -> None:
    client = StandIn(_decided(allowed=False, email_remaining=0, retry_after=840))
    for _ in range(50):
        state: dict[str, object] = {}
        with pytest.raises(TooManyRequests) as refused:
            await enforce(client, LOGIN, fail_open=True, request_state=state)  # type: ignore[arg-type]
        assert refused.value.headers["Retry-After"] == "840"
        assert b'"login-email";r=0;t=840' in state["response_headers"][b"ratelimit"]  # type: ignore[index]


async def test_checking_passes_hits_addend_through() -> None:
    client = StandIn(_decided(allowed=True, email_remaining=4))
    await enforce(client, LOGIN, fail_open=False, hits_addend=[1, 0])  # type: ignore[arg-type]
    assert client.hits_addend == [[1, 0]]


async def test_unreachable_limiter_follows_the_endpoints_failure_mode() -> None:
    down = StandIn(None)
    assert await enforce(down, LOGIN, fail_open=True) is None  # type: ignore[arg-type]
    with pytest.raises(ServiceUnavailable) as closed:
        await enforce(down, LOGIN, fail_open=False)  # type: ignore[arg-type]
    assert 5 <= int(closed.value.headers["Retry-After"]) <= 6


def test_the_client_reads_window_and_reset_from_the_rls_response() -> None:
    response = _Response(overall_code=_Response.OVER_LIMIT)
    per_minute = response.statuses.add(code=_Response.OK, limit_remaining=599)
    per_minute.current_limit.requests_per_unit = 600
    per_minute.current_limit.unit = _Response.RateLimit.MINUTE
    per_minute.duration_until_reset.FromMilliseconds(59_001)
    odd = response.statuses.add(code=_Response.OVER_LIMIT, limit_remaining=0)
    odd.current_limit.requests_per_unit = 5
    odd.current_limit.name = "5 per 900s"
    odd.duration_until_reset.FromMilliseconds(839_200)
    response.statuses.add(code=_Response.OK)  # no rule matched
    decision = _decision(response)
    assert not decision.allowed
    assert decision.retry_after_seconds == 840
    assert tuple(_status(s) for s in response.statuses) == (
        DescriptorStatus(600, 60, 599, 60, over_limit=False),
        DescriptorStatus(5, 900, 0, 840, over_limit=True),
        DescriptorStatus(None, None, 0, 0, over_limit=False),
    )


async def test_the_client_refuses_bad_hits_addends_before_any_call() -> None:
    client = RateLimitClient("127.0.0.1:9", "bulwark-auth")  # never contacted
    with pytest.raises(ValueError, match="hits_addend"):
        await client.decide(LOGIN, hits_addend=[1])
    with pytest.raises(ValueError, match="hits_addend"):
        await client.decide(LOGIN, hits_addend=-1)
