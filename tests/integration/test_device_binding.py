"""A device session is bound to the ``X-Device-Id`` sent at login: its refresh token is
refused from any other device id, and the session ends; a refresh without any device id is
refused too, but leaves the session and the token as they were."""

from __future__ import annotations

import httpx
import pytest

from .conftest import RunningStack
from .helpers import MobileUser, bearer, login, refresh, register
from .sessions_db import events, family_state

pytestmark = pytest.mark.security(stride="S", asvs=("V10.4",))


def test_a_refresh_from_another_device_is_refused_and_ends_the_session(
    stack: RunningStack,
) -> None:
    user = register(stack.auth_url)
    tokens = login(stack.auth_url, user)
    thief = MobileUser(email=user.email)  # same account, another device id

    stolen = refresh(stack.auth_url, str(tokens["refresh_token"]), thief)
    assert stolen.status_code == 400
    assert stolen.json()["error"] == "invalid_grant"
    assert ("refresh_device_mismatch", thief.device_id) in events(
        stack.databases["auth"], user.user_id
    )
    # The token has left its device: the session is ended, for the owner too.
    assert family_state(stack.databases["auth"], user.user_id) == (0, 1, 0)
    assert refresh(stack.auth_url, str(tokens["refresh_token"]), user).status_code == 400
    me = httpx.get(f"{stack.api_url}/v1/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 401


def test_a_refresh_without_the_bound_device_id_is_refused_and_ends_nothing(
    stack: RunningStack,
) -> None:
    """A stock OAuth client does not send our header: its refresh is refused with a
    description it can act on, and its user is not logged out."""
    user = register(stack.auth_url)
    tokens = login(stack.auth_url, user)
    for _ in range(2):  # refused every time, never counted as a use
        bare = httpx.post(
            f"{stack.auth_url}/oauth2/token",
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        )
        assert bare.status_code == 400
        assert bare.json()["error"] == "invalid_grant"
        assert "X-Device-Id is required" in bare.json()["error_description"]
    assert all(
        event != "refresh_device_mismatch"
        for event, _ in events(stack.databases["auth"], user.user_id)
    )
    assert family_state(stack.databases["auth"], user.user_id) == (1, 0, 0)
    me = httpx.get(f"{stack.api_url}/v1/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200
    # The same token, now with the session's device id, still works.
    rotated = refresh(stack.auth_url, str(tokens["refresh_token"]), user)
    assert rotated.status_code == 200, rotated.text
    assert refresh(stack.auth_url, rotated.json()["refresh_token"], user).status_code == 200


def test_a_session_started_without_a_device_id_is_not_bound(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    response = httpx.post(
        f"{stack.auth_url}/v1/auth/login", json={"email": user.email, "password": user.password}
    )
    assert response.status_code == 200
    rotated = refresh(stack.auth_url, response.json()["refresh_token"], user)
    assert rotated.status_code == 200
    assert family_state(stack.databases["auth"], user.user_id) == (1, 0, 0)


def test_a_malformed_device_id_at_login_is_400_not_an_unbound_session(
    stack: RunningStack,
) -> None:
    user = register(stack.auth_url)
    for bad in ("bad id with spaces", "x" * 129, "id;drop"):
        response = httpx.post(
            f"{stack.auth_url}/v1/auth/login",
            json={"email": user.email, "password": user.password},
            headers={"X-Device-Id": bad},
        )
        assert response.status_code == 400, bad
        assert response.json()["errors"][0]["field"] == "X-Device-Id"
