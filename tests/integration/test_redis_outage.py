"""Redis stopped under traffic, then restarted, across the whole stack: the rate-limit
service answers by each rule's failure mode within its Redis deadline (the API's limits
allow, the login backoff denies: a 503), the API's revocation check follows
REVOCATION_FAILURE_MODE (deny: 503), nothing hangs, and everything works again once Redis is
back, without restarting a service."""

from __future__ import annotations

import time

import httpx
import pytest

from .conftest import RunningStack, StackFactory, raised_api_limits
from .helpers import bearer, login, register
from .outages import SLACK, ThrowawayRedis, TimedTraffic, Traffic, eventually, timed

pytestmark = [pytest.mark.resilience, pytest.mark.security(stride="D", asvs=("V16.5",))]

REDIS_DEADLINE = 0.5  # REDIS_TIMEOUT_SECONDS of the API and of the limiter (default)


@pytest.fixture(scope="module")
def own(
    stack_factory: StackFactory,
    throwaway_redis: ThrowawayRedis,
    tmp_path_factory: pytest.TempPathFactory,
) -> RunningStack:
    """A stack whose every service uses the throwaway Redis, with the API's limits raised
    (its clients run at full speed, and must be served once Redis answers again)."""
    rules = raised_api_limits(tmp_path_factory.mktemp("rules") / "rules.yaml")
    redis_env = {"REDIS_URL": throwaway_redis.url}
    return stack_factory(
        env={
            "ratelimit": {**redis_env, "RATELIMIT_RULES": str(rules)},
            "auth": redis_env,
            "api": redis_env,
        }
    )


def test_redis_restart_under_traffic(own: RunningStack, throwaway_redis: ThrowawayRedis) -> None:
    user = register(own.auth_url)
    tokens = login(own.auth_url, user)
    me_url = f"{own.api_url}/v1/me"
    headers = bearer(tokens["access_token"], user)
    body = {"email": user.email, "password": user.password}
    assert httpx.get(me_url, headers=headers).status_code == 200

    traffic = Traffic(me_url, headers)
    traffic.start()
    try:
        time.sleep(0.3)
        throwaway_redis.stop()
        outage_started = len(traffic.answers)
        time.sleep(0.5)

        # The API: its limits fail open, but a session's revocation cannot be checked, and
        # REVOCATION_FAILURE_MODE=deny refuses, fast, with a problem body.
        refused, took = timed(lambda: httpx.get(me_url, headers=headers))
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert took < REDIS_DEADLINE + SLACK

        # Login: the backoff rules fail closed (failure_mode: deny), answered within the
        # limiter's Redis deadline, before any password check: an outage, so 503 (not 429,
        # which would read as the client's fault and feed the login-failure alert).
        denied, took = timed(lambda: httpx.post(f"{own.auth_url}/v1/auth/login", json=body))
        assert denied.status_code == 503, denied.text
        assert denied.headers["content-type"].startswith("application/problem+json")
        assert 5 <= int(denied.headers["retry-after"]) <= 6
        assert "RateLimit" not in denied.headers
        assert took < REDIS_DEADLINE + SLACK
        outage_answers = traffic.answers[outage_started:]

        throwaway_redis.start()  # same port, empty data: every service reconnects by itself
        back = eventually(
            lambda: httpx.get(me_url, headers=headers), lambda answer: answer.status_code == 200
        )
        assert back.status_code == 200, back.text
        assert "RateLimit" in back.headers  # the limiter counts again
        again = eventually(
            lambda: httpx.post(f"{own.auth_url}/v1/auth/login", json=body),
            lambda answer: answer.status_code == 200,
        )
        assert again.status_code == 200, again.text
    finally:
        traffic.done.set()
        traffic.join(timeout=10)

    assert outage_answers, "no traffic during the outage"
    assert {status for status, _ in outage_answers} <= {200, 503}
    assert 503 in {status for status, _ in outage_answers}
    assert max(seconds for _, seconds in outage_answers) < REDIS_DEADLINE + SLACK
    assert {status for status, _ in traffic.answers[-5:]} == {200}
    for service in ("api", "auth", "ratelimit"):
        assert "Traceback" not in own.log(service)


@pytest.mark.security(stride="E", asvs=("V7.4",))
def test_a_logged_out_session_stays_refused_across_a_redis_restart_that_loses_it(
    own: RunningStack, throwaway_redis: ThrowawayRedis
) -> None:
    """Its revocation was in Redis only; Redis comes back empty. The API must refuse the
    token at every moment (401, or 503 while the set cannot be trusted), never 200; once the
    auth service has rebuilt the set from Postgres, it is a 401 again and live sessions work."""
    ended_user = register(own.auth_url)
    ended = bearer(login(own.auth_url, ended_user)["access_token"], ended_user)
    assert httpx.post(f"{own.auth_url}/v1/auth/logout", headers=ended).status_code == 204
    live_user = register(own.auth_url)
    live = bearer(login(own.auth_url, live_user)["access_token"], live_user)
    me_url = f"{own.api_url}/v1/me"
    assert httpx.get(me_url, headers=ended).status_code == 401

    dead_traffic, live_traffic = Traffic(me_url, ended), Traffic(me_url, live)
    dead_traffic.start()
    live_traffic.start()
    try:
        time.sleep(0.3)
        throwaway_redis.stop()
        time.sleep(0.3)
        throwaway_redis.start()  # empty
        back = eventually(lambda: httpx.get(me_url, headers=live), lambda a: a.status_code == 200)
        assert back.status_code == 200, back.text
        time.sleep(0.5)
    finally:
        dead_traffic.done.set()
        live_traffic.done.set()
        dead_traffic.join(timeout=10)
        live_traffic.join(timeout=10)
    statuses = [status for status, _ in dead_traffic.answers]
    assert 200 not in statuses
    assert set(statuses) <= {401, 503}
    assert statuses[-1] == 401
    assert httpx.get(me_url, headers=ended).status_code == 401


def test_requests_succeed_within_a_second_of_redis_answering_again(
    own: RunningStack, throwaway_redis: ThrowawayRedis
) -> None:
    """8 clients call the API while Redis restarts: once Redis answers again, stale pooled
    connections are replaced without failing a request, the revocation set is rebuilt, and no
    request started more than 1 s later gets a 503."""
    user = register(own.auth_url)
    headers = bearer(login(own.auth_url, user)["access_token"], user)
    me_url = f"{own.api_url}/v1/me"
    clients = [TimedTraffic(me_url, headers) for _ in range(8)]
    for client in clients:
        client.start()
    try:
        time.sleep(0.5)
        throwaway_redis.stop()
        time.sleep(0.5)
        throwaway_redis.start()
        answering_again = time.monotonic()
        time.sleep(3)
    finally:
        for client in clients:
            client.done.set()
        for client in clients:
            client.join(timeout=10)
    late = [
        status
        for client in clients
        for started, status in client.answers_started
        if started > answering_again + 1.0
    ]
    assert len(late) > 20, "too little traffic after the restart"
    # Served (the limits are raised out of reach); never a 503.
    assert set(late) == {200}, sorted(set(late))


@pytest.mark.security(stride="E", asvs=("V7.4",))
def test_a_logged_out_session_stays_refused_when_redis_comes_back_from_an_older_snapshot(
    own: RunningStack, throwaway_redis: ThrowawayRedis
) -> None:
    """Redis is snapshotted, a user logs out, Redis crashes and comes back from the snapshot:
    the marker is back but the revocation is not (as after a failover to a lagging replica).
    The API must refuse the token at every moment (401, or 503 while the set is behind),
    never 200."""
    user = register(own.auth_url)
    me_url = f"{own.api_url}/v1/me"
    token = bearer(login(own.auth_url, user)["access_token"], user)
    live_user = register(own.auth_url)
    live = bearer(login(own.auth_url, live_user)["access_token"], live_user)
    assert httpx.get(me_url, headers=token).status_code == 200
    throwaway_redis.snapshot()
    assert httpx.post(f"{own.auth_url}/v1/auth/logout", headers=token).status_code == 204
    assert httpx.get(me_url, headers=token).status_code == 401

    traffic = Traffic(me_url, token)
    traffic.start()
    try:
        time.sleep(0.2)
        throwaway_redis.crash()
        throwaway_redis.start(from_snapshot=True)
        back = eventually(lambda: httpx.get(me_url, headers=live), lambda a: a.status_code == 200)
        assert back.status_code == 200, back.text
        time.sleep(0.5)
    finally:
        traffic.done.set()
        traffic.join(timeout=10)
    statuses = [status for status, _ in traffic.answers]
    assert 200 not in statuses
    assert set(statuses) <= {401, 503}
    assert httpx.get(me_url, headers=token).status_code == 401
