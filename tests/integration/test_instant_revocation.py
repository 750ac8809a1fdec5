"""Ending a session stops its access tokens at the API at once (the revoked-session set in
Redis): logout, logout-all, deleting a session, a refresh reuse and RFC 7009 revocation."""

from __future__ import annotations

import time
import uuid
from datetime import datetime

import httpx
import pytest
import redis

from .conftest import RunningStack, StackFactory
from .helpers import MobileUser, bearer, login, refresh, register

pytestmark = pytest.mark.security(stride="E", asvs=("V7.4",))


def _me(stack: RunningStack, access_token: object) -> int:
    return httpx.get(f"{stack.api_url}/v1/me", headers=bearer(access_token)).status_code


def _sessions(stack: RunningStack, tokens: dict[str, object], user: MobileUser) -> httpx.Response:
    return httpx.get(
        f"{stack.auth_url}/v1/auth/sessions", headers=bearer(tokens["access_token"], user)
    )


def _delete(
    stack: RunningStack, tokens: dict[str, object], user: MobileUser, session_id: str
) -> httpx.Response:
    return httpx.delete(
        f"{stack.auth_url}/v1/auth/sessions/{session_id}",
        headers=bearer(tokens["access_token"], user),
    )


@pytest.fixture(scope="module")
def quick_resync(stack_factory: StackFactory) -> RunningStack:
    """A stack whose auth service lists ended sessions in Redis again every second."""
    return stack_factory(env={"auth": {"REVOCATION_RESYNC_SECONDS": "1"}})


def test_logout_stops_this_sessions_access_token_at_once(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    phone, tablet = login(stack.auth_url, user), login(stack.auth_url, user)
    assert _me(stack, phone["access_token"]) == 200
    logout = httpx.post(
        f"{stack.auth_url}/v1/auth/logout", headers=bearer(phone["access_token"], user)
    )
    assert logout.status_code == 204
    refused = httpx.get(f"{stack.api_url}/v1/me", headers=bearer(phone["access_token"]))
    assert refused.status_code == 401
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert _me(stack, tablet["access_token"]) == 200  # the other session is untouched


def test_logout_all_stops_every_sessions_access_token(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    sessions = [login(stack.auth_url, user) for _ in range(3)]
    ended = httpx.post(
        f"{stack.auth_url}/v1/auth/logout-all", headers=bearer(sessions[0]["access_token"], user)
    )
    assert ended.status_code == 204
    assert [_me(stack, s["access_token"]) for s in sessions] == [401, 401, 401]


@pytest.mark.security(stride="S", asvs=("V10.4",))
def test_refresh_reuse_and_rfc7009_revocation_stop_the_access_tokens(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    tokens = login(stack.auth_url, user)
    middle = refresh(stack.auth_url, str(tokens["refresh_token"]), user).json()
    newest = refresh(stack.auth_url, middle["refresh_token"], user).json()
    assert _me(stack, newest["access_token"]) == 200
    assert refresh(stack.auth_url, str(tokens["refresh_token"]), user).status_code == 400
    assert _me(stack, newest["access_token"]) == 401
    assert _me(stack, tokens["access_token"]) == 401

    other = login(stack.auth_url, user)
    revoked = httpx.post(f"{stack.auth_url}/oauth2/revoke", data={"token": other["refresh_token"]})
    assert revoked.status_code == 200
    assert _me(stack, other["access_token"]) == 401


@pytest.mark.security(stride="R", asvs=("V7.5",))
def test_sessions_list_shows_device_platform_times_and_ip(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    tokens = login(stack.auth_url, user)
    time.sleep(0.05)
    refreshed = refresh(stack.auth_url, str(tokens["refresh_token"]), user).json()
    listed = _sessions(stack, refreshed, user)
    assert listed.status_code == 200
    assert listed.headers["cache-control"] == "no-store"
    (session,) = listed.json()["sessions"]
    assert session["device"] == "Test phone"
    assert session["deviceId"] == user.device_id
    assert session["platform"] == "ios"
    assert session["lastIp"] == "127.0.0.1"
    assert session["current"] is True
    used, created = (datetime.fromisoformat(session[k]) for k in ("lastUsedAt", "createdAt"))
    assert used > created  # the refresh counted as a use


@pytest.mark.security(stride="I", asvs=("V7.5", "V8.2"))
def test_deleting_a_session_ends_it_everywhere_and_hides_others(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    phone, tablet = login(stack.auth_url, user), login(stack.auth_url, user)
    tablet_id = next(
        s["id"] for s in _sessions(stack, phone, user).json()["sessions"] if not s["current"]
    )

    deleted = _delete(stack, phone, user, tablet_id)
    assert deleted.status_code == 204
    assert _me(stack, tablet["access_token"]) == 401
    assert refresh(stack.auth_url, str(tablet["refresh_token"]), user).status_code == 400
    assert _me(stack, phone["access_token"]) == 200  # the caller's own session lives on
    assert [s["id"] for s in _sessions(stack, phone, user).json()["sessions"]] != [tablet_id]
    assert len(_sessions(stack, phone, user).json()["sessions"]) == 1

    # Already ended, unknown, malformed, or another user's: 404 alike, never 403.
    stranger = register(stack.auth_url)
    theirs = login(stack.auth_url, stranger)
    their_id = _sessions(stack, theirs, stranger).json()["sessions"][0]["id"]
    for session_id in (tablet_id, str(uuid.uuid4()), "not-a-uuid", their_id):
        missing = _delete(stack, phone, user, session_id)
        assert missing.status_code == 404, session_id
        assert missing.headers["content-type"].startswith("application/problem+json")
    assert _me(stack, theirs["access_token"]) == 200  # untouched
    # Deleting the current session is a logout.
    own_id = _sessions(stack, phone, user).json()["sessions"][0]["id"]
    assert _delete(stack, phone, user, own_id).status_code == 204
    assert _me(stack, phone["access_token"]) == 401


def test_an_ended_session_lost_from_redis_is_listed_again(quick_resync: RunningStack) -> None:
    user = register(quick_resync.auth_url)
    tokens = login(quick_resync.auth_url, user)
    sid = httpx.get(f"{quick_resync.api_url}/v1/me", headers=bearer(tokens["access_token"]))
    logout = httpx.post(
        f"{quick_resync.auth_url}/v1/auth/logout", headers=bearer(tokens["access_token"], user)
    )
    assert logout.status_code == 204
    assert _me(quick_resync, tokens["access_token"]) == 401
    # Redis restarted without its data (or the write after the logout was lost).
    key = f"{quick_resync.env['api']['REDIS_KEY_PREFIX']}revoked:sid:{sid.json()['sessionId']}"
    client = redis.Redis.from_url(quick_resync.config.redis_url)
    try:
        assert client.delete(key) == 1
        deadline = time.monotonic() + 5
        while _me(quick_resync, tokens["access_token"]) != 401:
            assert time.monotonic() < deadline, "the auth service did not list the session again"
            time.sleep(0.2)
        assert 0 < client.ttl(key) <= 900 + 120
    finally:
        client.close()


def _user_remaining(response: httpx.Response) -> int:
    """``r`` of the per-user member of the RateLimit field."""
    for member in response.headers["RateLimit"].split(","):
        if member.strip().startswith('"user_id'):
            return int(member.split(";r=")[1].split(";")[0])
    raise AssertionError(response.headers["RateLimit"])


@pytest.mark.security(stride="D", asvs=("V2.4",))
def test_an_ended_sessions_token_does_not_spend_its_users_limit(stack: RunningStack) -> None:
    """A stolen token of a logged-out session is refused and counted per IP only: it cannot
    use up the user's own per-user limit (nor feed the user's burst detector)."""
    user = register(stack.auth_url)
    stolen = login(stack.auth_url, user)
    other = login(stack.auth_url, user)  # the user's other device, still logged in
    me = f"{stack.api_url}/v1/me"
    logout = httpx.post(
        f"{stack.auth_url}/v1/auth/logout", headers=bearer(stolen["access_token"], user)
    )
    assert logout.status_code == 204
    before = _user_remaining(httpx.get(me, headers=bearer(other["access_token"], user)))
    for _ in range(5):
        assert _me(stack, stolen["access_token"]) == 401
    after = _user_remaining(httpx.get(me, headers=bearer(other["access_token"], user)))
    assert after == before - 1
