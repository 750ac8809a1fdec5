"""The device authorization grant (RFC 8628) end to end: a TV asks for codes, its user
approves on the page, the TV polls until it has a normal device session."""

import hashlib
import time

import asyncpg
import httpx
import pytest

from bulwark.auth.oauth.sweep import purge_expired
from tests.integration.conftest import RunningStack, StackFactory
from tests.integration.helpers import bearer, login, register
from tests.integration.oauth_pages import (
    CLIENTS_ENV,
    DEVICE_GRANT,
    answer_device_code,
    browser,
    csrf_of,
    poll,
    sign_in,
    start_device_flow,
)

pytestmark = pytest.mark.security(stride="S", asvs=("V10.4",))

#: Seconds a device code lives in this module's stack (the minimum), so expiry is testable.
CODE_TTL = 10
INVALID_CODE = "That code is not valid or has expired."


@pytest.fixture(scope="module")
def oauth_stack(stack_factory: StackFactory) -> RunningStack:
    """A stack with the test clients registered, polling every second, codes living 10 s."""
    return stack_factory(
        env={
            "auth": {
                **CLIENTS_ENV,
                "DEVICE_POLL_INTERVAL_SECONDS": "1",
                "DEVICE_CODE_TTL_SECONDS": str(CODE_TTL),
            }
        }
    )


def _error(response: httpx.Response) -> str:
    assert response.status_code in {400, 401}, response.text
    assert response.headers["cache-control"] == "no-store"
    return str(response.json()["error"])


def test_an_approved_device_gets_one_normal_session(oauth_stack: RunningStack) -> None:
    auth = oauth_stack.auth_url
    user = register(auth)
    started = start_device_flow(auth)
    assert set(started) == {
        "device_code",
        "user_code",
        "verification_uri",
        "verification_uri_complete",
        "expires_in",
        "interval",
    }
    assert started["verification_uri"] == f"{auth}/device"
    assert started["verification_uri_complete"] == f"{auth}/device?user_code={started['user_code']}"
    assert (started["expires_in"], started["interval"]) == (CODE_TTL, 1)
    user_code = str(started["user_code"])
    assert len(user_code) == 9
    assert user_code[4] == "-"
    assert not set(user_code.replace("-", "")) - set("BCDFGHJKLMNPQRSTVWXZ")

    assert _error(poll(auth, started["device_code"])) == "authorization_pending"
    # Polled again at once: slow down, and the interval grows by 5 s (RFC 8628 §3.5).
    assert _error(poll(auth, started["device_code"])) == "slow_down"
    time.sleep(1.2)  # past the old interval, within the raised one
    assert _error(poll(auth, started["device_code"])) == "slow_down"

    with browser(auth) as page:
        assert sign_in(page, user).status_code == 303
        # Typed as a user might: lower case, no dash.
        consent = page.get("/device", params={"user_code": user_code.replace("-", "").lower()})
        assert consent.status_code == 200
        assert "Living-room TV" in consent.text
        assert user_code in consent.text
        approved = page.post(
            "/device",
            data={"user_code": user_code, "decision": "approve", "csrf_token": csrf_of(consent)},
        )
        assert approved.status_code == 200
        assert "Device connected" in approved.text
        # The user code was used: it names nothing any more.
        again = page.get("/device", params={"user_code": user_code})
        assert again.status_code == 400
        assert INVALID_CODE in again.text

    tokens = poll(auth, started["device_code"])
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "api"
    me = httpx.get(f"{oauth_stack.api_url}/v1/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json()["id"] == user.user_id
    # Exchanged once only.
    assert _error(poll(auth, started["device_code"])) == "invalid_grant"
    # A normal family, with rotation.
    form = {"grant_type": "refresh_token", "client_id": "tv-app"}
    rotated = httpx.post(
        f"{auth}/oauth2/token", data={**form, "refresh_token": body["refresh_token"]}
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["refresh_token"] != body["refresh_token"]
    # The session is listed with the client's name.
    sessions = httpx.get(
        f"{auth}/v1/auth/sessions", headers=bearer(rotated.json()["access_token"])
    ).json()["sessions"]
    assert [s["device"] for s in sessions] == ["Living-room TV"]


def test_a_denied_request_is_access_denied(oauth_stack: RunningStack) -> None:
    auth = oauth_stack.auth_url
    user = register(auth)
    started = start_device_flow(auth)
    with browser(auth) as page:
        sign_in(page, user)
        denied = answer_device_code(page, str(started["user_code"]), "deny")
        assert denied.status_code == 200
        assert "Request denied" in denied.text
    assert _error(poll(auth, started["device_code"])) == "access_denied"


def test_an_expired_code_is_refused_on_the_page_and_at_the_token_endpoint(
    oauth_stack: RunningStack,
) -> None:
    auth = oauth_stack.auth_url
    user = register(auth)
    started = start_device_flow(auth)
    time.sleep(CODE_TTL + 0.5)
    assert _error(poll(auth, started["device_code"])) == "expired_token"
    with browser(auth) as page:
        sign_in(page, user)
        expired = page.get("/device", params={"user_code": str(started["user_code"])})
        assert expired.status_code == 400
        assert INVALID_CODE in expired.text


def test_the_page_asks_to_sign_in_first_and_comes_back(oauth_stack: RunningStack) -> None:
    auth = oauth_stack.auth_url
    user = register(auth)
    started = start_device_flow(auth)
    with browser(auth) as page:
        first = page.get("/device", params={"user_code": str(started["user_code"])})
        assert first.status_code == 303
        assert first.headers["location"].startswith("/signin?next=%2Fdevice%3Fuser_code%3D")
        signin_page = page.get(first.headers["location"])
        next_field = f'name="next" value="/device?user_code={started["user_code"]}"'
        assert next_field in signin_page.text
        signed_in = sign_in(page, user, f"/device?user_code={started['user_code']}")
        assert signed_in.headers["location"] == f"/device?user_code={started['user_code']}"


@pytest.mark.security(stride="S", asvs=("V6.3",))
def test_a_wrong_password_on_the_page_is_refused_like_a_login(oauth_stack: RunningStack) -> None:
    auth = oauth_stack.auth_url
    user = register(auth)
    user.password = "Not-The-Password-1!"  # a wrong password, on purpose
    with browser(auth) as page:
        refused = sign_in(page, user)
        assert refused.status_code == 401
        assert "The email or password is incorrect." in refused.text
        assert user.password not in refused.text
        assert page.get("/device").status_code == 303  # not signed in


@pytest.mark.security(stride="T", asvs=("V3.5",))
def test_a_post_without_its_csrf_token_changes_nothing(oauth_stack: RunningStack) -> None:
    auth = oauth_stack.auth_url
    user = register(auth)
    started = start_device_flow(auth)
    user_code = str(started["user_code"])
    with browser(auth) as page:
        sign_in(page, user)
        page.get("/device", params={"user_code": user_code})
        forged = page.post("/device", data={"user_code": user_code, "decision": "approve"})
        assert forged.status_code == 403
        assert "not sent from this site" in forged.text
        wrong = page.post(
            "/device", data={"user_code": user_code, "decision": "approve", "csrf_token": "x" * 43}
        )
        assert wrong.status_code == 403
        # Another site's form, even with the right token, is refused by its Origin.
        token = csrf_of(page.get("/device", params={"user_code": user_code}))
        cross_site = page.post(
            "/device",
            data={"user_code": user_code, "decision": "approve", "csrf_token": token},
            headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        )
        assert cross_site.status_code == 403
    assert _error(poll(auth, started["device_code"])) == "authorization_pending"


@pytest.mark.security(stride="T", asvs=("V3.5",))
def test_a_sign_in_form_without_its_csrf_token_is_refused(oauth_stack: RunningStack) -> None:
    auth = oauth_stack.auth_url
    user = register(auth)
    with browser(auth) as page:
        page.get("/signin")
        forged = page.post(
            "/signin", data={"email": user.email, "password": user.password, "next": "/device"}
        )
        assert forged.status_code == 403
        assert page.get("/device").status_code == 303  # not signed in


@pytest.mark.security(stride="S", asvs=("V2.4",))
def test_guessing_user_codes_is_rate_limited_per_code(oauth_stack: RunningStack) -> None:
    auth = oauth_stack.auth_url
    user = register(auth)
    with browser(auth) as page:
        sign_in(page, user)
        answers = [
            page.get("/device", params={"user_code": "BCDF-GHJK"}).status_code for _ in range(11)
        ]
    assert answers[:10] == [400] * 10
    assert answers[10] == 429


@pytest.mark.security(stride="S", asvs=("V3.7",))
def test_sign_in_never_redirects_off_site(oauth_stack: RunningStack) -> None:
    auth = oauth_stack.auth_url
    user = register(auth)
    with browser(auth) as page:
        for target in ("https://evil.example/", "//evil.example/device", "/device.evil", "/\\evil"):
            assert sign_in(page, user, target).headers["location"] == "/device"


@pytest.mark.security(stride="E", asvs=("V8.2",))
def test_clients_may_use_only_their_own_grants_and_scopes(oauth_stack: RunningStack) -> None:
    endpoint = f"{oauth_stack.auth_url}/oauth2/device_authorization"
    unknown = httpx.post(endpoint, data={"client_id": "nobody"})
    assert unknown.status_code == 401
    assert unknown.json()["error"] == "invalid_client"
    web = httpx.post(endpoint, data={"client_id": "web-app"})
    assert web.status_code == 400
    assert web.json()["error"] == "unauthorized_client"
    wider = httpx.post(endpoint, data={"client_id": "tv-app", "scope": "api admin"})
    assert wider.status_code == 400
    assert wider.json()["error"] == "invalid_scope"
    # Another client cannot poll with the TV's device code.
    started = start_device_flow(oauth_stack.auth_url)
    other = poll(oauth_stack.auth_url, started["device_code"], client_id="web-app")
    assert other.json()["error"] == "unauthorized_client"
    assert poll(oauth_stack.auth_url, "bdc_" + "A" * 43).json()["error"] == "invalid_grant"


@pytest.mark.security(stride="I", asvs=("V14.2",))
async def test_codes_are_stored_only_as_hashes(oauth_stack: RunningStack) -> None:
    started = start_device_flow(oauth_stack.auth_url)
    conn = await asyncpg.connect(oauth_stack.databases["auth"])
    try:
        dump = await conn.fetchval("SELECT string_agg(t::text, ' ') FROM device_authorizations t")
    finally:
        await conn.close()
    assert str(started["device_code"]) not in dump
    assert str(started["user_code"]).replace("-", "") not in dump.upper()


def test_the_metadata_names_every_endpoint_and_capability(oauth_stack: RunningStack) -> None:
    auth = oauth_stack.auth_url
    metadata = httpx.get(f"{auth}/.well-known/oauth-authorization-server").json()
    assert metadata["authorization_endpoint"] == f"{auth}/oauth2/authorize"
    assert metadata["device_authorization_endpoint"] == f"{auth}/oauth2/device_authorization"
    assert metadata["response_types_supported"] == ["code"]
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["scopes_supported"] == ["api"]
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert set(metadata["grant_types_supported"]) == {
        "authorization_code",
        "refresh_token",
        DEVICE_GRANT,
    }


@pytest.mark.security(stride="E", asvs=("V7.4",))
def test_logging_out_everywhere_ends_the_sign_in_on_the_pages(oauth_stack: RunningStack) -> None:
    auth = oauth_stack.auth_url
    user = register(auth)
    tokens = login(auth, user)
    with browser(auth) as page:
        sign_in(page, user)
        assert page.get("/device").status_code == 200
        ended = httpx.post(
            f"{auth}/v1/auth/logout-all", headers=bearer(tokens["access_token"], user)
        )
        assert ended.status_code == 204
        assert page.get("/device").status_code == 303


async def test_expired_codes_are_swept_an_hour_after_expiry(oauth_stack: RunningStack) -> None:
    kept = start_device_flow(oauth_stack.auth_url)
    swept = start_device_flow(oauth_stack.auth_url)
    conn = await asyncpg.connect(oauth_stack.databases["auth"])
    try:
        await conn.execute(
            "UPDATE device_authorizations SET expires_at = now() - interval '61 minutes'"
            " WHERE device_code_hash = $1",
            hashlib.sha256(str(swept["device_code"]).encode()).digest(),
        )
        assert await purge_expired(conn) >= 1
        left = await conn.fetch("SELECT device_code_hash FROM device_authorizations")
    finally:
        await conn.close()
    hashes = {row["device_code_hash"] for row in left}
    assert hashlib.sha256(str(kept["device_code"]).encode()).digest() in hashes
    assert hashlib.sha256(str(swept["device_code"]).encode()).digest() not in hashes


@pytest.mark.security(stride="E", asvs=("V7.4",))
def test_logging_out_everywhere_withdraws_an_approval_not_yet_exchanged(
    oauth_stack: RunningStack,
) -> None:
    auth = oauth_stack.auth_url
    user = register(auth)
    tokens = login(auth, user)
    started = start_device_flow(auth)
    with browser(auth) as page:
        sign_in(page, user)
        assert answer_device_code(page, str(started["user_code"]), "approve").status_code == 200
    ended = httpx.post(f"{auth}/v1/auth/logout-all", headers=bearer(tokens["access_token"], user))
    assert ended.status_code == 204
    assert _error(poll(auth, started["device_code"])) == "access_denied"


def test_a_refresh_names_its_client_unless_it_is_the_mobile_apps(
    oauth_stack: RunningStack,
) -> None:
    auth = oauth_stack.auth_url
    user = register(auth)
    started = start_device_flow(auth)
    with browser(auth) as page:
        sign_in(page, user)
        answer_device_code(page, str(started["user_code"]), "approve")
    refresh_token = poll(auth, started["device_code"]).json()["refresh_token"]
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    # No client_id: the mobile app's refresh, and this session is the TV's.
    assert _error(httpx.post(f"{auth}/oauth2/token", data=form)) == "invalid_grant"
    named = httpx.post(f"{auth}/oauth2/token", data={**form, "client_id": "tv-app"})
    assert named.status_code == 200


@pytest.mark.security(stride="E", asvs=("V8.2",))
def test_one_client_cannot_revoke_anothers_tokens(oauth_stack: RunningStack) -> None:
    auth = oauth_stack.auth_url
    user = register(auth)
    tokens = login(auth, user)  # the mobile app's session
    for token in (tokens["access_token"], tokens["refresh_token"]):
        revoked = httpx.post(
            f"{auth}/oauth2/revoke", data={"token": str(token), "client_id": "tv-app"}
        )
        assert revoked.status_code == 200  # RFC 7009 §2.2: says nothing either way
    me = httpx.get(f"{oauth_stack.api_url}/v1/me", headers=bearer(tokens["access_token"], user))
    assert me.status_code == 200


@pytest.mark.security(stride="S", asvs=("V3.7",))
def test_sign_in_refuses_a_next_that_cannot_be_a_location(oauth_stack: RunningStack) -> None:
    auth = oauth_stack.auth_url
    user = register(auth)
    with browser(auth) as page:
        for target in ("/device?\r\nX-Injected: 1", "/device?\u2028", "/device? x"):
            signed_in = sign_in(page, user, target)
            assert signed_in.status_code == 303
            assert signed_in.headers["location"] == "/device"


@pytest.mark.security(stride="D", asvs=("V6.2",))
def test_a_password_longer_than_logins_is_refused_before_any_work(
    oauth_stack: RunningStack,
) -> None:
    auth = oauth_stack.auth_url
    user = register(auth)
    user.password = "A1!" + "a" * 1022  # 1,025 characters: /v1/auth/login's schema refuses it too
    with browser(auth) as page:
        refused = sign_in(page, user)
    assert refused.status_code == 400
    assert "The password is too long." in refused.text
