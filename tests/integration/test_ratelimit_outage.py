"""The rate-limit service stopped under traffic, then restarted, or paused (no answer at
all): each endpoint answers by its failure mode (auth: login deny, registration and token
allow; API: allow) within the gRPC deadline, and the limits are enforced again once the
service is back."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from .conftest import RunningStack, StackFactory, raised_api_limits
from .helpers import bearer, login, random_email, refresh, register
from .outages import SLACK, Traffic, eventually, timed

pytestmark = [pytest.mark.resilience, pytest.mark.security(stride="SD", asvs=("V2.4", "V16.5"))]

AUTH_DEADLINE = 1.0  # RATELIMIT_TIMEOUT_MS of the auth service (default)
API_DEADLINE = 1.0  # RATELIMIT_TIMEOUT_MS of the API (default)


@pytest.fixture(scope="module")
def own(stack_factory: StackFactory, tmp_path_factory: pytest.TempPathFactory) -> RunningStack:
    """A stack of its own: its limiter is stopped and paused. The API's limits are raised:
    a client calls it at full speed throughout and must be served."""
    rules = raised_api_limits(tmp_path_factory.mktemp("rules") / "rules.yaml")
    return stack_factory(env={"ratelimit": {"RATELIMIT_RULES": str(rules)}})


def test_each_endpoint_follows_its_failure_mode_and_recovers(own: RunningStack) -> None:
    user = register(own.auth_url)
    tokens = login(own.auth_url, user)
    me_url = f"{own.api_url}/v1/me"
    headers = bearer(tokens["access_token"], user)
    before = httpx.get(me_url, headers=headers)
    assert before.status_code == 200
    assert "RateLimit" in before.headers  # the limiter was asked

    traffic = Traffic(me_url, headers)
    traffic.start()
    try:
        time.sleep(0.3)
        own.stack.stop_service("ratelimit")
        outage_started = len(traffic.answers)
        time.sleep(0.3)

        # Login fails closed: 503 with a Retry-After, and no limit fields.
        body = {"email": user.email, "password": user.password}
        denied, took = timed(lambda: httpx.post(f"{own.auth_url}/v1/auth/login", json=body))
        assert denied.status_code == 503, denied.text
        assert denied.headers["content-type"].startswith("application/problem+json")
        assert 5 <= int(denied.headers["retry-after"]) <= 6
        assert "RateLimit" not in denied.headers
        assert took < AUTH_DEADLINE + SLACK

        # Registration and the token endpoint fail open.
        new = {"email": random_email(), "password": user.password, "displayName": "Outage"}
        registered = httpx.post(f"{own.auth_url}/v1/users", json=new)  # argon2: not timed
        assert registered.status_code == 201, registered.text
        refreshed, took = timed(lambda: refresh(own.auth_url, str(tokens["refresh_token"]), user))
        assert refreshed.status_code == 200, refreshed.text
        assert "RateLimit" not in refreshed.headers
        assert took < AUTH_DEADLINE + SLACK

        # The API fails open, and answers fast.
        served, took_api = timed(lambda: httpx.get(me_url, headers=headers))
        assert served.status_code == 200
        assert "RateLimit" not in served.headers
        assert took_api < API_DEADLINE + SLACK

        outage_answers = traffic.answers[outage_started:]
        own.stack.start_service("ratelimit")

        # Back: login is limited (and answered) again within a few seconds.
        again = eventually(
            lambda: httpx.post(f"{own.auth_url}/v1/auth/login", json=body),
            lambda answer: answer.status_code != 503,
        )
        assert again.status_code == 200, again.text
        assert "RateLimit" in again.headers
        limited = eventually(
            lambda: httpx.get(me_url, headers=headers), lambda answer: "RateLimit" in answer.headers
        )
        assert "RateLimit" in limited.headers
    finally:
        traffic.done.set()
        traffic.join(timeout=10)

    assert outage_answers, "no traffic during the outage"
    assert {status for status, _ in traffic.answers} == {200}
    assert max(seconds for _, seconds in outage_answers) < API_DEADLINE + SLACK
    # The outage shows in the HTTP services' own metrics (the limiter's cannot show it).
    for service in ("api", "auth"):
        assert _unanswered(own, service) >= 1, service


def _unanswered(stack: RunningStack, service: str) -> float:
    """``bulwark_ratelimit_unanswered_total`` of ``service``, summed over its codes."""
    text = httpx.get(stack.config.metrics_url(service)).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("bulwark_ratelimit_unanswered_total{")
    )


def test_a_limiter_that_does_not_answer_costs_one_deadline(own: RunningStack) -> None:
    """SIGSTOP: connections are accepted but nothing answers, so only the deadline ends
    each call."""
    user = register(own.auth_url)
    tokens = login(own.auth_url, user)
    headers = bearer(tokens["access_token"], user)
    body = {"email": user.email, "password": user.password}
    pid = own.stack.pid("ratelimit")
    os.kill(pid, signal.SIGSTOP)
    try:
        denied, took = timed(lambda: httpx.post(f"{own.auth_url}/v1/auth/login", json=body))
        assert denied.status_code == 503, denied.text
        assert AUTH_DEADLINE * 0.9 <= took < AUTH_DEADLINE + SLACK
        served, took = timed(lambda: httpx.get(f"{own.api_url}/v1/me", headers=headers))
        assert served.status_code == 200
        assert API_DEADLINE * 0.9 <= took < API_DEADLINE + SLACK
    finally:
        os.kill(pid, signal.SIGCONT)
    again = eventually(
        lambda: httpx.post(f"{own.auth_url}/v1/auth/login", json=body),
        lambda answer: answer.status_code != 503,
    )
    assert again.status_code == 200, again.text
