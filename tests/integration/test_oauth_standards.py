"""What standard OAuth clients expect of the token and revocation endpoints: RFC 7009
revocation of access tokens as well as refresh tokens, RFC 6749 §2.3/§5.2 client
authentication of public clients, and RFC 6749 §6 scope on refresh."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from .conftest import RunningStack
from .helpers import MobileUser, bearer, login, refresh, register
from .sessions_db import grant_scope

pytestmark = pytest.mark.security(stride="SE", asvs=("V10.4",))


def _me(stack: RunningStack, access_token: object) -> int:
    return httpx.get(f"{stack.api_url}/v1/me", headers=bearer(access_token)).status_code


def _refused_within(stack: RunningStack, access_token: object, seconds: float = 1.0) -> bool:
    deadline = time.monotonic() + seconds
    while _me(stack, access_token) != 401:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _revoke(stack: RunningStack, form: dict[str, object], **headers: str) -> httpx.Response:
    return httpx.post(f"{stack.auth_url}/oauth2/revoke", data=form, headers=headers)


# --- RFC 7009: revoking an access token ------------------------------------------------------


@pytest.mark.parametrize("hint", ["access_token", "refresh_token", None])
def test_revoking_an_access_token_ends_its_session(stack: RunningStack, hint: str | None) -> None:
    user = register(stack.auth_url)
    tokens, other = login(stack.auth_url, user), login(stack.auth_url, user)
    assert _me(stack, tokens["access_token"]) == 200
    form = {"token": tokens["access_token"], **({"token_type_hint": hint} if hint else {})}

    revoked = _revoke(stack, form)
    assert revoked.status_code == 200
    assert revoked.headers["cache-control"] == "no-store"
    assert _refused_within(stack, tokens["access_token"])
    ended = refresh(stack.auth_url, str(tokens["refresh_token"]), user)
    assert (ended.status_code, ended.json()["error"]) == (400, "invalid_grant")
    assert _me(stack, other["access_token"]) == 200  # the user's other session lives on
    assert _revoke(stack, form).status_code == 200  # again: already ended, no error


def test_a_refresh_token_is_revoked_whatever_the_hint(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    tokens = login(stack.auth_url, user)
    revoked = _revoke(stack, {"token": tokens["refresh_token"], "token_type_hint": "access_token"})
    assert revoked.status_code == 200
    assert _refused_within(stack, tokens["access_token"])
    assert refresh(stack.auth_url, str(tokens["refresh_token"]), user).status_code == 400


@pytest.mark.security(stride="T", asvs=("V10.4",))
def test_a_forged_or_garbage_token_is_200_and_ends_nothing(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    tokens = login(stack.auth_url, user)
    access = str(tokens["access_token"])
    header, claims, signature = access.split(".")
    forged_signature = (
        f"{header}.{claims}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"
    )
    unsigned = f"{header}.{claims}."
    for token in (forged_signature, unsigned, "garbage", "a.b.c", "brt_" + "A" * 43):
        for hint in ("access_token", "refresh_token"):
            answer = _revoke(stack, {"token": token, "token_type_hint": hint})
            assert answer.status_code == 200, (token, answer.text)
    assert _me(stack, access) == 200
    assert refresh(stack.auth_url, str(tokens["refresh_token"]), user).status_code == 200


# --- RFC 6749 §2.3, §5.2: public clients authenticate with nothing ---------------------------


@pytest.mark.parametrize("path", ["/oauth2/token", "/oauth2/revoke"])
def test_client_credentials_are_refused_with_a_challenge(stack: RunningStack, path: str) -> None:
    user = register(stack.auth_url)
    tokens = login(stack.auth_url, user)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": tokens["refresh_token"],
        "token": tokens["refresh_token"],
        "client_id": stack.env["auth"].get("CLIENT_ID", "bulwark-mobile"),
    }
    basic = httpx.BasicAuth("bulwark-mobile", "secret")
    cases: list[tuple[dict[str, object], httpx.Auth | None, dict[str, str], str]] = [
        (form, basic, {}, 'Basic realm="bulwark"'),
        ({**form, "client_secret": "secret"}, None, {}, 'Basic realm="bulwark"'),
        ({**form, "client_id": "no-such-client"}, None, {}, 'Basic realm="bulwark"'),
        (form, None, {"Authorization": "Digest username=x"}, 'Digest realm="bulwark"'),
    ]
    for data, auth, headers, challenge in cases:
        answer = httpx.post(
            f"{stack.auth_url}{path}", data=data, auth=auth, headers={**user.headers, **headers}
        )
        assert answer.status_code == 401, (data, headers, answer.text)
        assert answer.json()["error"] == "invalid_client"
        assert answer.headers["www-authenticate"] == challenge
        assert answer.headers["cache-control"] == "no-store"
    # Refused before the grant: the token was neither spent nor revoked.
    assert _me(stack, tokens["access_token"]) == 200
    # An app's access token sent along (an HTTP interceptor) is not client authentication.
    with_bearer = httpx.post(
        f"{stack.auth_url}/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers={**user.headers, "Authorization": f"Bearer {tokens['access_token']}"},
    )
    if path == "/oauth2/token":
        assert with_bearer.status_code == 200, with_bearer.text
    else:
        assert refresh(stack.auth_url, str(tokens["refresh_token"]), user).status_code == 200


def test_two_client_authentications_are_invalid_request(stack: RunningStack) -> None:
    answer = httpx.post(
        f"{stack.auth_url}/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": "x", "client_secret": "s"},
        auth=httpx.BasicAuth("bulwark-mobile", "s"),
    )
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_request")
    assert "www-authenticate" not in answer.headers


def test_metadata_names_no_client_authentication(stack: RunningStack) -> None:
    metadata = httpx.get(f"{stack.auth_url}/.well-known/oauth-authorization-server").json()
    assert metadata["token_endpoint_auth_methods_supported"] == ["none"]
    assert metadata["revocation_endpoint_auth_methods_supported"] == ["none"]


# --- RFC 6749 §6: the scope of a refresh ----------------------------------------------------


def _refresh(
    stack: RunningStack, refresh_token: object, user: MobileUser, scope: str | None
) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return httpx.post(
        f"{stack.auth_url}/oauth2/token",
        data={**form, **({"scope": scope} if scope is not None else {})},
        headers=user.headers,
    )


def _claims(access_token: object) -> dict[str, object]:
    payload = str(access_token).split(".")[1]
    claims: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=" * 4))
    return claims


def test_a_narrower_scope_applies_to_the_access_token_only(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    tokens = login(stack.auth_url, user)
    grant_scope(stack.databases["auth"], user.user_id, "api notes:read")

    narrow = _refresh(stack, tokens["refresh_token"], user, "notes:read")
    assert narrow.status_code == 200, narrow.text
    assert narrow.json()["scope"] == "notes:read"
    assert _claims(narrow.json()["access_token"])["scope"] == "notes:read"
    # The refresh token keeps the whole grant: asked for nothing, the next refresh gets it all.
    whole = _refresh(stack, narrow.json()["refresh_token"], user, None)
    assert whole.status_code == 200, whole.text
    assert whole.json()["scope"] == "api notes:read"
    assert _claims(whole.json()["access_token"])["scope"] == "api notes:read"
    again = _refresh(stack, whole.json()["refresh_token"], user, "notes:read api")
    assert (again.status_code, again.json()["scope"]) == (200, "notes:read api")


@pytest.mark.security(stride="E", asvs=("V8.2", "V10.3"))
def test_the_api_refuses_a_token_whose_scope_lacks_api(stack: RunningStack) -> None:
    """RFC 6750 §3.1: a valid token without the API's scope is 403 ``insufficient_scope``,
    on reads and writes alike; the same session's token with ``api`` still works."""
    user = register(stack.auth_url)
    tokens = login(stack.auth_url, user)
    grant_scope(stack.databases["auth"], user.user_id, "api notes:read")
    narrow = _refresh(stack, tokens["refresh_token"], user, "notes:read").json()
    headers = bearer(narrow["access_token"], user)
    for method, path in (("GET", "/v1/me"), ("GET", "/v1/notes"), ("POST", "/v1/notes")):
        answer = httpx.request(
            method, f"{stack.api_url}{path}", headers=headers, json={"title": "t", "body": "b"}
        )
        assert answer.status_code == 403, (path, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert 'error="insufficient_scope", scope="api"' in answer.headers["www-authenticate"]
    notes = httpx.get(f"{stack.api_url}/v1/notes", headers=bearer(tokens["access_token"], user))
    assert notes.status_code == 200
    assert notes.json()["items"] == []  # nothing was written
    whole = _refresh(stack, narrow["refresh_token"], user, None).json()
    me = httpx.get(f"{stack.api_url}/v1/me", headers=bearer(whole["access_token"], user))
    assert me.status_code == 200, me.text


@pytest.mark.security(stride="E", asvs=("V8.2",))
@pytest.mark.parametrize("scope", ["api admin", "admin", "API", "api  api", " api", 'a"b'])
def test_a_wider_or_malformed_scope_is_invalid_scope_and_spends_nothing(
    stack: RunningStack, scope: str
) -> None:
    user = register(stack.auth_url)
    tokens = login(stack.auth_url, user)
    refused = _refresh(stack, tokens["refresh_token"], user, scope)
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_scope"), refused.text
    assert refused.headers["cache-control"] == "no-store"
    assert _me(stack, tokens["access_token"]) == 200  # the session lives on
    rotated = _refresh(stack, tokens["refresh_token"], user, "api")  # the token is unspent
    assert (rotated.status_code, rotated.json()["scope"]) == (200, "api")


@pytest.mark.security(stride="I", asvs=("V10.4",))
def test_an_unknown_or_ended_token_says_nothing_about_the_scope(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    tokens = login(stack.auth_url, user)
    assert _revoke(stack, {"token": tokens["refresh_token"]}).status_code == 200
    for token in ("brt_" + "A" * 43, "garbage", tokens["refresh_token"]):
        for scope in ("admin", "api  x", "api"):
            refused = _refresh(stack, token, user, scope)
            assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
            assert refused.json()["error_description"] == "The refresh token is invalid."


def test_a_retry_within_the_grace_window_has_its_scope_judged_too(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    tokens = login(stack.auth_url, user)
    first = _refresh(stack, tokens["refresh_token"], user, None).json()
    wider = _refresh(stack, tokens["refresh_token"], user, "admin")
    assert (wider.status_code, wider.json()["error"]) == (400, "invalid_scope")
    retried = _refresh(stack, tokens["refresh_token"], user, "api")
    assert retried.status_code == 200, retried.text
    assert retried.json()["refresh_token"] == first["refresh_token"]
    assert _me(stack, retried.json()["access_token"]) == 200
