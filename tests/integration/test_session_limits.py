"""The auth service's routes for a signed-in caller are rate-limited before any database work
(issue 9, item 1: the cheapest refusal first): 120 per minute per user, 600 per IP; a token
of an ended session counts per IP only, so a stolen one cannot spend its victim's limit."""

from __future__ import annotations

import httpx
import pytest

from .conftest import RunningStack, StackFactory
from .helpers import bearer, login, register

pytestmark = pytest.mark.security(stride="SD", asvs=("V2.4",))

USER_LIMIT = 120  # endpoint=sessions, user_id: services/ratelimit/src/bulwark/ratelimit/rules.yaml
IP_LIMIT = 600  # endpoint=sessions, remote_address


@pytest.fixture(scope="module")
def own(stack_factory: StackFactory) -> RunningStack:
    return stack_factory(services=["ratelimit", "auth"])


def test_a_user_gets_120_session_calls_a_minute(own: RunningStack) -> None:
    user = register(own.auth_url)
    headers = bearer(login(own.auth_url, user)["access_token"], user)
    with httpx.Client(timeout=10) as client:
        statuses = [
            client.get(f"{own.auth_url}/v1/auth/sessions", headers=headers).status_code
            for _ in range(USER_LIMIT)
        ]
        refused = client.get(f"{own.auth_url}/v1/auth/sessions", headers=headers)
    assert statuses == [200] * USER_LIMIT
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    assert '"sessions-user_id";r=0' in refused.headers["ratelimit"]


def test_an_ended_sessions_token_never_spends_its_owners_limit(own: RunningStack) -> None:
    user = register(own.auth_url)
    stolen = bearer(login(own.auth_url, user)["access_token"], user)
    assert httpx.post(f"{own.auth_url}/v1/auth/logout", headers=stolen).status_code == 204
    with httpx.Client(timeout=10) as client:
        for _ in range(USER_LIMIT + 10):
            answer = client.get(f"{own.auth_url}/v1/auth/sessions", headers=stolen)
            assert answer.status_code == 401, answer.text
    fresh = bearer(login(own.auth_url, user)["access_token"], user)
    assert httpx.get(f"{own.auth_url}/v1/auth/sessions", headers=fresh).status_code == 200


def test_forged_tokens_count_against_the_address(stack_factory: StackFactory) -> None:
    """A flood of forged tokens from one address reaches the per-IP limit (600 a minute) and
    is refused by it, before any database work; the API does the same."""
    own = stack_factory(services=["ratelimit", "auth"])
    forged = {"Authorization": "Bearer eyJhbGciOiJFUzI1NiJ9.e30.AAAA"}
    with httpx.Client(timeout=10) as client:
        statuses = [
            client.get(f"{own.auth_url}/v1/auth/sessions", headers=forged).status_code
            for _ in range(IP_LIMIT + 1)
        ]
    assert statuses[:IP_LIMIT] == [401] * IP_LIMIT
    assert statuses[IP_LIMIT] == 429
