"""The authorization code grant with PKCE (RFC 6749 §4.1, RFC 7636, RFC 9700) end to end:
authorize, sign in, consent, the code at the redirect URI, its one exchange."""

import json
import time
from urllib.parse import urlencode

import httpx
import pytest

from tests.integration.conftest import RunningStack, StackFactory
from tests.integration.helpers import MobileUser, bearer, login, register
from tests.integration.oauth_pages import (
    TV,
    WEB,
    WEB_REDIRECT,
    browser,
    csrf_of,
    hidden_fields,
    pkce_pair,
    query_of,
    sign_in,
)
from tests.integration.sessions_db import events

pytestmark = pytest.mark.security(stride="ST", asvs=("V10.4", "V3.4"))

CODE_TTL = 5


@pytest.fixture(scope="module")
def oauth_stack(stack_factory: StackFactory) -> RunningStack:
    """A stack with the test clients (and a second web client) registered, codes living
    5 s."""
    clients = [TV, WEB, {**WEB, "client_id": "other-web", "name": "Other"}]
    return stack_factory(
        env={
            "auth": {
                "OAUTH_CLIENTS": json.dumps(clients),
                "AUTHORIZATION_CODE_TTL_SECONDS": str(CODE_TTL),
            }
        }
    )


def _request(challenge: str, **overrides: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": "web-app",
        "redirect_uri": WEB_REDIRECT,
        "state": "s-123",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "scope": "api",
        **overrides,
    }


def _authorize(
    auth_url: str,
    user: MobileUser,
    challenge: str,
    decision: str = "approve",
    **overrides: str,
) -> str:
    """Go through sign-in and consent as a browser; return where the answer redirects."""
    with browser(auth_url) as page:
        request = {k: v for k, v in _request(challenge, **overrides).items() if v}
        first = page.get("/oauth2/authorize", params=request)
        assert first.status_code == 303
        assert first.headers["location"].startswith("/signin?next=%2Foauth2%2Fauthorize%3F")
        next_page = query_of(first.headers["location"])["next"]
        signed_in = sign_in(page, user, next_page)
        assert signed_in.headers["location"] == next_page
        consent = page.get(next_page)
        assert consent.status_code == 200
        assert "Web dashboard" in consent.text
        # The page may end its form at the client's redirect URI, and nowhere else.
        csp = consent.headers["content-security-policy"]
        assert "form-action 'self' http://127.0.0.1:9;" in csp
        assert "frame-ancestors 'none'" in csp
        assert consent.headers["x-frame-options"] == "DENY"
        assert "<script" not in consent.text
        fields = hidden_fields(consent)
        answer = page.post(
            "/oauth2/authorize",
            data={**fields, "decision": decision, "csrf_token": csrf_of(consent)},
        )
        assert answer.status_code == 303
        return answer.headers["location"]


def _exchange(auth_url: str, code: str, verifier: str, **overrides: str) -> httpx.Response:
    return httpx.post(
        f"{auth_url}/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": WEB_REDIRECT,
            "client_id": "web-app",
            "code_verifier": verifier,
            **overrides,
        },
    )


@pytest.mark.security(stride="E", asvs=("V7.4",))
def test_a_code_is_exchanged_once_and_a_replay_ends_its_session(
    oauth_stack: RunningStack,
) -> None:
    auth = oauth_stack.auth_url
    user = register(auth)
    verifier, challenge = pkce_pair()
    location = _authorize(auth, user, challenge)
    assert location.startswith(WEB_REDIRECT + "?")
    answer = query_of(location)
    assert answer["state"] == "s-123"
    assert answer["iss"] == auth  # RFC 9207
    tokens = _exchange(auth, answer["code"], verifier)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    me = f"{oauth_stack.api_url}/v1/me"
    assert httpx.get(me, headers=bearer(body["access_token"])).status_code == 200

    replay = _exchange(auth, answer["code"], verifier)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    # What the first exchange issued is revoked (RFC 6749 §4.1.2): at the API within 1 s.
    deadline = time.monotonic() + 1.0
    while httpx.get(me, headers=bearer(body["access_token"])).status_code != 401:
        assert time.monotonic() < deadline, "the replayed code's session still works"
        time.sleep(0.05)
    refused = httpx.post(
        f"{auth}/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": body["refresh_token"],
            "client_id": "web-app",
        },
    )
    assert refused.json()["error"] == "invalid_grant"


def test_a_wrong_verifier_spends_the_code(oauth_stack: RunningStack) -> None:
    auth = oauth_stack.auth_url
    verifier, challenge = pkce_pair()
    code = query_of(_authorize(auth, register(auth), challenge))["code"]
    other_verifier, _ = pkce_pair()
    assert _exchange(auth, code, other_verifier).json()["error"] == "invalid_grant"
    assert _exchange(auth, code, verifier).json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    "overrides",
    [
        {"redirect_uri": WEB_REDIRECT + "/other"},
        {"client_id": "other-web"},
        {"code_verifier": ""},
    ],
    ids=["another-redirect-uri", "another-client", "no-verifier"],
)
def test_a_code_is_bound_to_its_client_redirect_and_challenge(
    oauth_stack: RunningStack, overrides: dict[str, str]
) -> None:
    auth = oauth_stack.auth_url
    verifier, challenge = pkce_pair()
    code = query_of(_authorize(auth, register(auth), challenge))["code"]
    refused = _exchange(auth, code, verifier, **overrides)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    # Nothing was issued: the code cannot be used now either.
    assert _exchange(auth, code, verifier).json()["error"] == "invalid_grant"


def test_an_expired_code_is_refused(oauth_stack: RunningStack) -> None:
    auth = oauth_stack.auth_url
    verifier, challenge = pkce_pair()
    code = query_of(_authorize(auth, register(auth), challenge))["code"]
    time.sleep(CODE_TTL + 0.5)
    assert _exchange(auth, code, verifier).json()["error"] == "invalid_grant"


@pytest.mark.security(stride="E", asvs=("V10.7",))
def test_a_denial_is_redirected_as_access_denied(oauth_stack: RunningStack) -> None:
    auth = oauth_stack.auth_url
    _, challenge = pkce_pair()
    user = register(auth)
    answer = query_of(_authorize(auth, user, challenge, decision="deny"))
    assert answer == {"error": "access_denied", "state": "s-123", "iss": auth}
    recorded = [event for event, _ in events(oauth_stack.databases["auth"], user.user_id)]
    assert "authorization_denied" in recorded
    assert "authorization_code_issued" not in recorded


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": ""}, "invalid_request"),
        ({"code_challenge": ""}, "invalid_request"),
        ({"code_challenge": "too-short"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "api admin"}, "invalid_scope"),
    ],
    ids=["plain", "no-method", "no-challenge", "bad-challenge", "implicit", "wider-scope"],
)
def test_request_errors_go_back_to_the_client(
    oauth_stack: RunningStack, overrides: dict[str, str], error: str
) -> None:
    _, challenge = pkce_pair()
    params = {k: v for k, v in _request(challenge, **overrides).items() if v}
    answer = httpx.get(f"{oauth_stack.auth_url}/oauth2/authorize", params=params)
    assert answer.status_code == 303
    location = answer.headers["location"]
    assert location.startswith(WEB_REDIRECT + "?")
    query = query_of(location)
    assert query["error"] == error
    assert query["state"] == "s-123"
    assert query["iss"] == oauth_stack.auth_url


@pytest.mark.parametrize(
    "overrides",
    [
        {"client_id": "nobody"},
        {"client_id": "tv-app"},  # registered, but not for this grant
        {"redirect_uri": "http://127.0.0.1:9/callback/evil"},
        {"redirect_uri": "http://127.0.0.1:9/callback?x=1"},
        {"redirect_uri": "https://evil.example/callback"},
    ],
    ids=["unknown-client", "client-without-grant", "longer-path", "extra-query", "other-host"],
)
def test_an_untrusted_client_or_redirect_is_shown_never_redirected(
    oauth_stack: RunningStack, overrides: dict[str, str]
) -> None:
    _, challenge = pkce_pair()
    params = _request(challenge, **overrides)
    answer = httpx.get(f"{oauth_stack.auth_url}/oauth2/authorize", params=params)
    assert answer.status_code == 400
    assert "location" not in answer.headers
    assert answer.headers["content-type"].startswith("text/html")


@pytest.mark.security(stride="E", asvs=("V10.7",))
def test_a_tampered_consent_form_is_checked_again(oauth_stack: RunningStack) -> None:
    auth = oauth_stack.auth_url
    user = register(auth)
    _, challenge = pkce_pair()
    with browser(auth) as page:
        sign_in(page, user, "/oauth2/authorize?" + urlencode(_request(challenge)))
        consent = page.get("/oauth2/authorize", params=_request(challenge))
        fields = {**hidden_fields(consent), "redirect_uri": "https://evil.example/callback"}
        answer = page.post(
            "/oauth2/authorize",
            data={**fields, "decision": "approve", "csrf_token": csrf_of(consent)},
        )
        assert answer.status_code == 400
        assert "location" not in answer.headers
        forged = page.post(
            "/oauth2/authorize", data={**hidden_fields(consent), "decision": "approve"}
        )
        assert forged.status_code == 403


def test_a_redirect_uri_named_when_authorizing_is_required_when_exchanging(
    oauth_stack: RunningStack,
) -> None:
    auth = oauth_stack.auth_url
    user = register(auth)
    verifier, challenge = pkce_pair()
    code = query_of(_authorize(auth, user, challenge))["code"]
    without = _exchange(auth, code, verifier, redirect_uri="")
    assert without.json()["error"] == "invalid_grant"
    # Not named when authorizing (the client has one): not needed when exchanging.
    verifier, challenge = pkce_pair()
    code = query_of(_authorize(auth, user, challenge, redirect_uri=""))["code"]
    assert _exchange(auth, code, verifier, redirect_uri="").status_code == 200


def test_a_long_state_survives_the_sign_in(oauth_stack: RunningStack) -> None:
    state = "\u20ac" * 300  # 300 characters, 2,700 once percent-encoded in next
    verifier, challenge = pkce_pair()
    answer = query_of(
        _authorize(oauth_stack.auth_url, register(oauth_stack.auth_url), challenge, state=state)
    )
    assert answer["state"] == state
    assert _exchange(oauth_stack.auth_url, answer["code"], verifier).status_code == 200


@pytest.mark.security(stride="E", asvs=("V7.4",))
def test_logging_out_everywhere_spends_unused_codes(oauth_stack: RunningStack) -> None:
    auth = oauth_stack.auth_url
    user = register(auth)
    verifier, challenge = pkce_pair()
    code = query_of(_authorize(auth, user, challenge))["code"]
    tokens = login(auth, user)
    ended = httpx.post(f"{auth}/v1/auth/logout-all", headers=bearer(tokens["access_token"], user))
    assert ended.status_code == 204
    assert _exchange(auth, code, verifier).json()["error"] == "invalid_grant"
