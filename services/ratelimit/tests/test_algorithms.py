"""Integration tests (real Redis, real server and channel): the per-rule options.

Sliding-window counter, distinct identities, backoff and its reset and refund actions, identity
normalisation, shadow mode and failure modes, all through ``ShouldRateLimit``.
"""

import asyncio
import hashlib
import io
import json
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from bulwark.ratelimit.limiter import Hit, Limiter, LimiterUnavailableError
from bulwark.ratelimit.rules import RateLimit, parse_rules, redis_key
from bulwark.ratelimit.server import RateLimitServer
from bulwark.ratelimit.service import key_for

pytestmark = pytest.mark.security(stride="SD", asvs=("V2.4",))

RULES = """
domains:
  - domain: t
    descriptors:
      - key: counter
        algorithm: sliding_counter
        rate_limit: {requests: 3, window_seconds: 60}
      - key: counter_day
        algorithm: sliding_counter
        rate_limit: {requests: 10, window_seconds: 86400}
      - key: log
        rate_limit: {requests: 2, window_seconds: 60}
      - key: email
        rate_limit: {requests: 3, window_seconds: 60}
      - key: user
        normalize: identity
        rate_limit: {requests: 3, window_seconds: 60}
      - key: shadow
        shadow_mode: true
        rate_limit: {requests: 1, window_seconds: 60}
      - key: shadow_backoff
        shadow_mode: true
        backoff: {failures: 2, window_seconds: 60, block_seconds: 1, max_block_seconds: 2}
      - key: open
        failure_mode: allow
        rate_limit: {requests: 1, window_seconds: 60}
      - key: closed
        failure_mode: deny
        rate_limit: {requests: 1, window_seconds: 60}
      - key: endpoint
        value: login_failure
        descriptors:
          - key: email
            backoff: {failures: 3, window_seconds: 60, block_seconds: 1, max_block_seconds: 2}
          - key: remote_address
            backoff: {failures: 3, window_seconds: 60, block_seconds: 1, max_block_seconds: 2}
            descriptors:
              - key: email
                algorithm: distinct
                rate_limit: {requests: 3, window_seconds: 60}
"""

Response = rls_pb2.RateLimitResponse
OK, OVER = Response.OK, Response.OVER_LIMIT
Entries = Sequence[tuple[str, str]]


@pytest.fixture
def rules_path(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


class Caller:
    """Raw ``ShouldRateLimit`` calls over a real channel, answering the whole response."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.stub = rls_pb2_grpc.RateLimitServiceStub(self.channel)

    async def __call__(self, *descriptors: Entries, hits: int = 1, domain: str = "t") -> Any:
        request = rls_pb2.RateLimitRequest(domain=domain)
        for entries in descriptors:
            descriptor = request.descriptors.add()
            descriptor.hits_addend.value = hits
            for key, value in entries:
                descriptor.entries.append(
                    ratelimit_pb2.RateLimitDescriptor.Entry(key=key, value=value)
                )
        return await self.stub.ShouldRateLimit(request, timeout=5)


@pytest.fixture
async def call(server: RateLimitServer) -> AsyncIterator[Caller]:
    caller = Caller(server.port)
    yield caller
    await caller.channel.close()


async def codes(call: Caller, entries: Entries, times: int, hits: int = 1) -> list[int]:
    return [(await call(entries, hits=hits)).overall_code for _ in range(times)]


# --- sliding-window counter ------------------------------------------------------------------


async def test_counter_allows_the_limit_then_denies_without_consuming(call: Caller) -> None:
    entries = [("counter", "a")]
    assert await codes(call, entries, 5) == [OK, OK, OK, OVER, OVER]
    denied = await call(entries)
    assert denied.statuses[0].limit_remaining == 0
    assert 0 < denied.statuses[0].duration_until_reset.ToMilliseconds() <= 60_000
    assert (await call([("counter", "b")])).statuses[0].limit_remaining == 2


async def test_counter_keeps_constant_memory(call: Caller, redis_url: str, key_prefix: str) -> None:
    assert await codes(call, [("counter", "m")], 5) == [OK, OK, OK, OVER, OVER]
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        key = redis_key(key_prefix, "t", [("counter", "m")]) + ":c"
        assert await client.type(key) == b"hash"
        assert await client.hlen(key) == 3  # window index, current and previous counts
        assert await client.hget(key, "c") == b"3"  # the denied requests counted nothing
        assert 0 < await client.pttl(key) <= 120_000
    finally:
        await client.aclose()


async def test_counter_weights_the_previous_window(
    call: Caller, redis_url: str, key_prefix: str
) -> None:
    """A full previous day-window still weighs on this one; two windows ago none.

    The previous window holds 10**9 hits, so its weight stays above the limit of 10 however
    late in the current window the test runs (down to the last few seconds, which it skips).
    """
    client = redis.asyncio.Redis.from_url(redis_url)
    key = redis_key(key_prefix, "t", [("counter_day", "w")]) + ":c"
    try:
        seconds, _micros = await client.time()
        window = seconds // 86400
        if seconds - window * 86400 > 86400 - 5:
            pytest.skip("too close to the window boundary for a deterministic estimate")
        await client.hset(key, mapping={"w": window - 1, "c": 10**9, "p": 0})
        assert (await call([("counter_day", "w")])).overall_code == OVER
        # another bucket: the first is now in the local over-limit cache until its reset
        old = redis_key(key_prefix, "t", [("counter_day", "old")]) + ":c"
        await client.hset(old, mapping={"w": window - 2, "c": 10**9, "p": 0})
        answer = await call([("counter_day", "old")])
        assert answer.overall_code == OK
        assert answer.statuses[0].limit_remaining == 9
    finally:
        await client.aclose()


# --- identity normalisation ------------------------------------------------------------------


async def test_identity_variants_share_one_bucket(call: Caller) -> None:
    variants = [" Alice@Example.COM ", "alice@example.com", "\uff41lice@example.com"]  # fullwidth
    assert [(await call([("email", v)])).overall_code for v in variants] == [OK, OK, OK]
    assert (await call([("email", "ALICE@example.com\t")])).overall_code == OVER
    # a rule option normalises any key
    assert await codes(call, [("user", " Bob ")], 3) == [OK, OK, OK]
    assert (await call([("user", "BOB")])).overall_code == OVER


# --- shadow mode -----------------------------------------------------------------------------


async def test_shadow_rule_decides_and_logs_but_never_denies(
    call: Caller, log_stream: io.StringIO
) -> None:
    start = log_stream.tell()
    assert await codes(call, [("shadow", "s")], 3) == [OK, OK, OK]
    both = await call([("shadow", "s")], [("log", "x")])
    assert both.overall_code == OK
    assert both.statuses[1].limit_remaining == 1  # the other descriptor was counted
    log_stream.seek(start)
    events = [json.loads(line)["event"] for line in log_stream.read().splitlines()]
    assert events.count("shadow_over_limit") == 3


# --- distinct identities per IP (credential stuffing) ---------------------------------------


def stuffing(ip: str, email: str) -> list[tuple[str, str]]:
    return [("endpoint", "login_failure"), ("remote_address", ip), ("email", email)]


async def test_one_ip_is_blocked_after_many_distinct_identities(call: Caller) -> None:
    for email in ("a@x", "b@x", "c@x"):
        assert (await call(stuffing("10.0.0.1", email))).overall_code == OK
    # a known identity is not refused by this rule, a new one is, and is not added
    assert (await call(stuffing("10.0.0.1", "A@X"))).overall_code == OK
    assert (await call(stuffing("10.0.0.1", "d@x"), hits=0)).overall_code == OVER
    denied = await call(stuffing("10.0.0.1", "d@x"))
    assert denied.overall_code == OVER
    assert denied.statuses[0].limit_remaining == 0
    assert (await call(stuffing("10.0.0.1", "b@x"), hits=0)).overall_code == OK
    assert (await call(stuffing("10.0.0.2", "d@x"))).overall_code == OK  # another IP


# --- backoff ---------------------------------------------------------------------------------

EMAIL = [("endpoint", "login_failure"), ("email", "victim@example.com")]
IP = [("endpoint", "login_failure"), ("remote_address", "192.0.2.7")]
RESET = [*EMAIL, ("backoff", "reset")]


async def test_backoff_blocks_after_n_failures_and_doubles_up_to_the_maximum(
    call: Caller,
) -> None:
    assert (await call(EMAIL, hits=0)).overall_code == OK
    first = [await call(EMAIL) for _ in range(4)]
    # three failures are allowed; a 4th (reserved before the password check) starts a block
    assert [r.overall_code for r in first] == [OK, OK, OK, OVER]
    assert [r.statuses[0].limit_remaining for r in first[:3]] == [2, 1, 0]
    blocked = await call(EMAIL, hits=0)
    assert blocked.overall_code == OVER
    assert not blocked.dynamic_metadata.fields  # a real limit, not a failure mode
    assert 0 < blocked.statuses[0].duration_until_reset.ToMilliseconds() <= 1000
    assert (await call(EMAIL)).overall_code == OVER  # a failure while blocked counts nothing
    await asyncio.sleep(1.05)
    assert (await call(EMAIL, hits=0)).overall_code == OK
    assert [(await call(EMAIL)).overall_code for _ in range(4)] == [OK, OK, OK, OVER]
    second = (await call(EMAIL, hits=0)).statuses[0].duration_until_reset.ToMilliseconds()
    assert 1000 < second <= 2000  # doubled
    await asyncio.sleep(second / 1000 + 0.05)
    assert [(await call(EMAIL)).overall_code for _ in range(4)] == [OK, OK, OK, OVER]
    third = (await call(EMAIL, hits=0)).statuses[0].duration_until_reset.ToMilliseconds()
    assert 1000 < third <= 2000  # capped at max_block_seconds


async def test_hits_addend_zero_checks_without_counting_failures(call: Caller) -> None:
    for _ in range(10):
        assert (await call(EMAIL, hits=0)).overall_code == OK
    assert (await call(EMAIL)).statuses[0].limit_remaining == 2


async def test_success_resets_the_identity_but_not_the_ip(call: Caller) -> None:
    for _ in range(2):
        assert (await call(EMAIL, IP)).overall_code == OK
    reset = await call(RESET)
    assert reset.overall_code == OK
    assert (await call(EMAIL, hits=0)).statuses[0].limit_remaining == 3
    assert (await call(IP, hits=0)).statuses[0].limit_remaining == 1
    # a reset also lifts a block and forgets the strikes
    assert [(await call(EMAIL)).overall_code for _ in range(4)] == [OK, OK, OK, OVER]
    assert (await call(RESET)).overall_code == OK
    assert (await call(EMAIL, hits=0)).overall_code == OK
    assert [(await call(EMAIL)).overall_code for _ in range(4)] == [OK, OK, OK, OVER]
    again = (await call(EMAIL, hits=0)).statuses[0].duration_until_reset.ToMilliseconds()
    assert again <= 1000  # first strike again, not doubled


async def test_actions_on_other_rules_are_unlimited(call: Caller) -> None:
    unsupported = [("log", "reset"), ("log", "other"), *(("counter", a) for a in ACTIONS)]
    for key, action in unsupported:
        answer = await call([(key, "x"), ("backoff", action)])
        assert answer.overall_code == OK
        assert not answer.statuses[0].HasField("current_limit")
    # and count nothing
    assert (await call([("log", "x")], hits=0)).statuses[0].limit_remaining == 2
    assert (await call([("counter", "x")], hits=0)).statuses[0].limit_remaining == 3


async def test_refund_gives_back_the_newest_hit_of_a_sliding_log(call: Caller) -> None:
    """An attempt that was never judged (the login's database was down) is taken back."""
    assert await codes(call, [("log", "x")], 3) == [OK, OK, OVER]
    assert (await call([("log", "x"), ("backoff", "refund")])).overall_code == OK
    assert (await call([("log", "x")], hits=0)).statuses[0].limit_remaining == 1
    assert (await call([("log", "x")])).overall_code == OK
    for _ in range(3):  # more refunds than hits: the log empties, never below
        assert (await call([("log", "x"), ("backoff", "refund")])).overall_code == OK
    assert (await call([("log", "x")], hits=0)).statuses[0].limit_remaining == 2


ACTIONS = ("reset", "refund", "other")


async def test_refund_gives_back_one_reserved_failure(call: Caller) -> None:
    for _ in range(2):
        assert (await call(IP)).overall_code == OK
    assert (await call([*IP, ("backoff", "refund")])).overall_code == OK
    assert (await call(IP, hits=0)).statuses[0].limit_remaining == 2
    assert (await call([*IP, ("backoff", "refund")])).overall_code == OK
    assert (await call([*IP, ("backoff", "refund")])).overall_code == OK  # nothing left: no-op
    assert (await call(IP, hits=0)).statuses[0].limit_remaining == 3


async def test_refund_removes_an_identity_from_the_distinct_set(call: Caller) -> None:
    for email in ("a@x", "b@x", "c@x"):
        assert (await call(stuffing("10.0.0.9", email))).overall_code == OK
    assert (await call(stuffing("10.0.0.9", "d@x"), hits=0)).overall_code == OVER
    refund = [*stuffing("10.0.0.9", " C@X "), ("backoff", "refund")]  # normalised as counted
    assert (await call(refund)).overall_code == OK
    assert (await call(stuffing("10.0.0.9", "d@x"))).overall_code == OK
    assert (await call(stuffing("10.0.0.9", "e@x"), hits=0)).overall_code == OVER


@pytest.mark.security(stride="S", asvs=("V15.4",))
async def test_parallel_reservations_from_one_ip_are_judged_one_by_one(call: Caller) -> None:
    """Parallel reservations (failures counted at check time, as the login sends them) are
    judged one after the other: 3 distinct identities and 3 failures per IP admit exactly 3.
    That the auth service reserves at all is tested through it, in
    tests/integration/test_login_backoff.py."""
    answers = await asyncio.gather(
        *(call(stuffing("10.0.0.10", f"user{n}@x"), IP) for n in range(20))
    )
    assert sum(answer.overall_code == OK for answer in answers) == 3


# --- failure modes ---------------------------------------------------------------------------


@pytest.mark.security(stride="D", asvs=("V16.5",))
async def test_failure_modes_answer_when_redis_is_down(start_server: Any, free_port: int) -> None:
    server = await start_server(
        REDIS_URL=f"redis://127.0.0.1:{free_port}/0", REDIS_TIMEOUT_SECONDS="0.05"
    )
    caller = Caller(server.port)
    try:
        started = time.monotonic()
        assert (await caller([("open", "x")])).overall_code == OK
        closed = await caller([("open", "x")], [("closed", "x")])
        assert closed.overall_code == OVER
        assert [s.code for s in closed.statuses] == [OK, OVER]
        # marked, so that callers tell an outage from an exhausted limit
        assert closed.dynamic_metadata.fields["bulwark.failure_mode_applied"].bool_value
        assert time.monotonic() - started < 1.0
        # a rule without failure_mode answers too: allow, as Envoy's filter defaults to
        assert (await caller([("open", "x")], [("log", "x")])).overall_code == OK
        assert (await caller([("log", "x")], [("closed", "x")])).overall_code == OVER
    finally:
        await caller.channel.close()


@pytest.mark.security(stride="D", asvs=("V16.5",))
async def test_failure_mode_when_redis_never_answers(start_server: Any) -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    blackhole = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = blackhole.sockets[0].getsockname()[1]
    try:
        server = await start_server(
            REDIS_URL=f"redis://127.0.0.1:{port}/0", REDIS_TIMEOUT_SECONDS="0.05"
        )
        caller = Caller(server.port)
        try:
            started = time.monotonic()
            assert (await caller([("closed", "y")])).overall_code == OVER
            assert (await caller([("open", "y")])).overall_code == OK
            assert time.monotonic() - started < 0.5
        finally:
            await caller.channel.close()
    finally:
        blackhole.close()


@pytest.mark.parametrize("error", [AttributeError, IndexError, ConnectionResetError])
async def test_any_client_error_is_a_redis_failure(error: type[Exception]) -> None:
    """redis-py can raise AttributeError from a connection torn down mid-call (seen against a
    cluster); it must reach the failure modes, not the caller as INTERNAL."""

    class BrokenClient:
        def register_script(self, _script: str) -> Any:
            async def run(**_kwargs: Any) -> Any:
                raise error("connection lost")

            return run

    limiter = Limiter(BrokenClient(), timeout_seconds=0.1)  # type: ignore[arg-type]
    with pytest.raises(LimiterUnavailableError):
        await limiter.hit([Hit("k", RateLimit(1, 60), 1)])


def test_key_for_distinct_is_the_ip_bucket() -> None:
    rules = parse_rules(RULES)
    match = rules.resolve("t", stuffing("10.0.0.1", " A@X "))
    assert match is not None
    key, member = key_for("p:", "t", match)
    assert member == hashlib.sha256(b"a@x").hexdigest()[:32]  # not the email itself
    assert key == redis_key("p:", "t", stuffing("10.0.0.1", "a@x")[:2]) + ":d"


async def test_a_call_that_starts_a_block_counts_nothing_else(call: Caller) -> None:
    """The failure that starts a block is kept (it is the block); the call's other
    descriptors, refused with it, count nothing."""
    day = [("counter_day", "starts-a-block")]
    for _ in range(3):
        assert (await call(EMAIL, day)).overall_code == OK
    started = await call(EMAIL, day)
    assert [s.code for s in started.statuses] == [OVER, OK]
    assert (await call(day, hits=0)).statuses[0].limit_remaining == 7  # 3 counted, not 4
    assert (await call(EMAIL, hits=0)).overall_code == OVER  # the block did start


async def test_a_shadow_backoff_starts_and_reports_its_blocks_without_denying(
    call: Caller,
) -> None:
    """Shadow mode is judged and counted like enforcement: the block starts (and is reported
    with its own length), only the denial is left out."""
    trial = [("shadow_backoff", "someone@example.com")]
    assert [(await call(trial)).overall_code for _ in range(3)] == [OK, OK, OK]
    probe = await call(trial, hits=0)
    assert probe.overall_code == OK
    assert 0 < probe.statuses[0].duration_until_reset.ToMilliseconds() <= 1000  # the block
