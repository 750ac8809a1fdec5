"""Concurrent and retried refreshes with one refresh token: benign repeats within the grace
window get working tokens, the family never forks, and anything else is a reuse."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .conftest import RunningStack, StackFactory
from .helpers import bearer, login, refresh, register
from .sessions_db import events, family_state

pytestmark = pytest.mark.security(stride="SE", asvs=("V10.4", "V15.4"))

GRACE_SECONDS = 2


@pytest.fixture(scope="module")
def short_grace(stack_factory: StackFactory) -> RunningStack:
    """A stack whose grace window is two seconds, to test its edges quickly."""
    return stack_factory(env={"auth": {"REFRESH_REUSE_GRACE_SECONDS": str(GRACE_SECONDS)}})


def test_concurrent_refreshes_with_one_token_all_get_the_one_live_token(
    stack: RunningStack,
) -> None:
    user = register(stack.auth_url)
    token = str(login(stack.auth_url, user)["refresh_token"])
    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(lambda _: refresh(stack.auth_url, token, user), range(12)))
    assert [r.status_code for r in responses] == [200] * 12, [r.text for r in responses]
    # Every answer carries the same refresh token: the family did not fork.
    assert len({r.json()["refresh_token"] for r in responses}) == 1
    assert family_state(stack.databases["auth"], user.user_id) == (1, 0, 0)
    for response in responses:  # every access token works at the API
        me = httpx.get(f"{stack.api_url}/v1/me", headers=bearer(response.json()["access_token"]))
        assert me.status_code == 200
    retries = [kind for kind, _ in events(stack.databases["auth"], user.user_id)]
    assert retries.count("refresh_retry_accepted") == 11
    # The one live token rotates normally afterwards.
    final = refresh(stack.auth_url, responses[0].json()["refresh_token"], user)
    assert final.status_code == 200
    assert family_state(stack.databases["auth"], user.user_id) == (1, 0, 0)


def test_two_refreshes_in_sequence_rotate_normally(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    token = str(login(stack.auth_url, user)["refresh_token"])
    for _ in range(3):
        response = refresh(stack.auth_url, token, user)
        assert response.status_code == 200
        token = response.json()["refresh_token"]
    live, revoked, reuses = family_state(stack.databases["auth"], user.user_id)
    assert (live, revoked, reuses) == (1, 0, 0)


def test_a_retry_just_inside_the_window_gets_the_same_refresh_token(
    short_grace: RunningStack,
) -> None:
    user = register(short_grace.auth_url)
    token = str(login(short_grace.auth_url, user)["refresh_token"])
    first = refresh(short_grace.auth_url, token, user)
    assert first.status_code == 200
    time.sleep(GRACE_SECONDS - 0.7)  # the answer was "lost"; the app retries
    retry = refresh(short_grace.auth_url, token, user)
    assert retry.status_code == 200
    assert retry.json()["refresh_token"] == first.json()["refresh_token"]
    assert retry.json()["access_token"] != first.json()["access_token"]
    assert family_state(short_grace.databases["auth"], user.user_id) == (1, 0, 0)
    assert refresh(short_grace.auth_url, retry.json()["refresh_token"], user).status_code == 200


def test_a_retry_just_outside_the_window_is_a_reuse(short_grace: RunningStack) -> None:
    user = register(short_grace.auth_url)
    token = str(login(short_grace.auth_url, user)["refresh_token"])
    first = refresh(short_grace.auth_url, token, user)
    assert first.status_code == 200
    time.sleep(GRACE_SECONDS + 0.7)
    late = refresh(short_grace.auth_url, token, user)
    assert late.status_code == 400
    assert late.json()["error"] == "invalid_grant"
    assert family_state(short_grace.databases["auth"], user.user_id) == (0, 1, 1)
    # The family is ended: its newest refresh token and its access token are dead too.
    assert refresh(short_grace.auth_url, first.json()["refresh_token"], user).status_code == 400
    me = httpx.get(f"{short_grace.api_url}/v1/me", headers=bearer(first.json()["access_token"]))
    assert me.status_code == 401


def test_an_older_token_within_the_window_is_a_reuse(short_grace: RunningStack) -> None:
    user = register(short_grace.auth_url)
    oldest = str(login(short_grace.auth_url, user)["refresh_token"])
    middle = refresh(short_grace.auth_url, oldest, user).json()["refresh_token"]
    newest = refresh(short_grace.auth_url, middle, user).json()["refresh_token"]
    # `oldest` is not the live token's immediate predecessor: a copy, not a retry.
    assert refresh(short_grace.auth_url, oldest, user).status_code == 400
    assert family_state(short_grace.databases["auth"], user.user_id) == (0, 1, 1)
    assert refresh(short_grace.auth_url, newest, user).status_code == 400
