"""One mobile session end to end over HTTP: register, login, API calls, refresh, reuse
detection, logout; each against the real services, Postgres and Redis."""

from __future__ import annotations

import httpx
import pytest

from .conftest import RunningStack
from .helpers import bearer, login, refresh, register

pytestmark = pytest.mark.security(stride="SE", asvs=("V7.2", "V10.4"))


def test_full_session_with_reuse_detection(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    tokens = login(stack.auth_url, user)
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 900
    access, refresh_token = tokens["access_token"], str(tokens["refresh_token"])

    me = httpx.get(f"{stack.api_url}/v1/me", headers=bearer(access, user))
    assert me.status_code == 200
    assert me.json()["id"] == user.user_id

    created = httpx.post(
        f"{stack.api_url}/v1/notes",
        json={"title": "Groceries", "body": "milk"},
        headers=bearer(access, user),
    )
    assert created.status_code == 201
    listed = httpx.get(f"{stack.api_url}/v1/notes", headers=bearer(access, user)).json()
    assert [note["title"] for note in listed["items"]] == ["Groceries"]

    rotated = refresh(stack.auth_url, refresh_token, user)
    assert rotated.status_code == 200
    assert rotated.headers["cache-control"] == "no-store"
    middle = rotated.json()["refresh_token"]
    assert middle != refresh_token
    rotated = refresh(stack.auth_url, middle, user)
    assert rotated.status_code == 200
    newest = rotated.json()["refresh_token"]

    # The first token is not the live token's immediate predecessor, so even within the
    # grace window for retries its replay is a reuse.
    replay = refresh(stack.auth_url, refresh_token, user)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    # The replay revoked the whole family: the newest token is dead too.
    after = refresh(stack.auth_url, newest, user)
    assert after.status_code == 400
    assert after.json()["error"] == "invalid_grant"
    sessions = httpx.get(
        f"{stack.auth_url}/v1/auth/sessions", headers=bearer(rotated.json()["access_token"], user)
    )
    assert sessions.status_code == 401

    again = login(stack.auth_url, user)
    logout = httpx.post(
        f"{stack.auth_url}/v1/auth/logout", headers=bearer(again["access_token"], user)
    )
    assert logout.status_code == 204
    assert refresh(stack.auth_url, str(again["refresh_token"]), user).status_code == 400


@pytest.mark.security(stride="E", asvs=("V7.4", "V7.5"))
def test_sessions_list_and_logout_all(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    phone = login(stack.auth_url, user)
    tablet = login(stack.auth_url, user)
    listed = httpx.get(
        f"{stack.auth_url}/v1/auth/sessions", headers=bearer(phone["access_token"], user)
    )
    assert listed.status_code == 200
    sessions = listed.json()["sessions"]
    assert len(sessions) == 2
    assert sum(session["current"] for session in sessions) == 1
    assert {s["deviceId"] for s in sessions} == {user.device_id}
    assert all(s["platform"] == "ios" and s["lastIp"] == "127.0.0.1" for s in sessions)

    ended = httpx.post(
        f"{stack.auth_url}/v1/auth/logout-all", headers=bearer(tablet["access_token"], user)
    )
    assert ended.status_code == 204
    for tokens in (phone, tablet):
        assert refresh(stack.auth_url, str(tokens["refresh_token"]), user).status_code == 400


@pytest.mark.security(stride="E", asvs=("V7.4",))
def test_revocation_endpoint_ends_the_family(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    tokens = login(stack.auth_url, user)
    revoked = httpx.post(f"{stack.auth_url}/oauth2/revoke", data={"token": tokens["refresh_token"]})
    assert revoked.status_code == 200
    assert refresh(stack.auth_url, str(tokens["refresh_token"]), user).status_code == 400
    # RFC 7009 §2.2: an unknown token is not an error.
    unknown = httpx.post(f"{stack.auth_url}/oauth2/revoke", data={"token": "nonsense"})
    assert unknown.status_code == 200


@pytest.mark.security(stride="I", asvs=("V16.5",))
def test_token_endpoint_errors_follow_rfc6749(stack: RunningStack) -> None:
    cases = [
        ({"grant_type": "password", "username": "a", "password": "b"}, "unsupported_grant_type"),
        ({"grant_type": "refresh_token"}, "invalid_request"),
        ({}, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": "brt_" + "A" * 43}, "invalid_grant"),
        ({"grant_type": "refresh_token", "refresh_token": "' OR 1=1 --"}, "invalid_grant"),
    ]
    for form, error in cases:
        response = httpx.post(f"{stack.auth_url}/oauth2/token", data=form)
        assert response.status_code == 400, form
        assert response.json()["error"] == error
    as_json = httpx.post(
        f"{stack.auth_url}/oauth2/token",
        json={"grant_type": "refresh_token", "refresh_token": "x"},
    )
    assert as_json.status_code == 400
    assert as_json.json()["error"] == "invalid_request"
    repeated = httpx.post(
        f"{stack.auth_url}/oauth2/token",
        content=b"grant_type=refresh_token&refresh_token=a&refresh_token=b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert repeated.json()["error"] == "invalid_request"


def test_discovery_documents(stack: RunningStack) -> None:
    metadata = httpx.get(f"{stack.auth_url}/.well-known/oauth-authorization-server").json()
    assert metadata["issuer"] == stack.env["auth"]["ISSUER"]
    assert metadata["jwks_uri"].endswith("/.well-known/jwks.json")
    assert "refresh_token" in metadata["grant_types_supported"]
    jwks = httpx.get(f"{stack.auth_url}/.well-known/jwks.json")
    assert "max-age" in jwks.headers["cache-control"]
    for key in jwks.json()["keys"]:
        assert key["alg"] == "ES256"
        assert "d" not in key  # never the private part
