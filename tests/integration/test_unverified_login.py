"""``UNVERIFIED_LOGIN`` (docs/email-verification.md): with ``deny``, the right password of an
account whose address is not verified is 403 ``email_not_verified`` on ``/v1/auth/login``
and ``/signin``, after the password check, with no session started and no failure counted
for the backoff; ``allow`` (the default) logs such an account in.

The login limits are raised out of the way but the identity's backoff is tight (2
failures), so a refusal counted as a failure would show as a 429.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from .conftest import RunningStack, StackFactory
from .helpers import MobileUser, assert_problem, database_rows, login, mail_token, register
from .oauth_pages import browser, sign_in

PROBLEM_TYPE = "urn:bulwark:problem:email-not-verified"
WRONG = "Wrong-Password-1!"
RULES = """
domains:
  - domain: bulwark-auth
    descriptors:
      - key: endpoint
        value: login
        descriptors:
          - key: email
            rate_limit: {requests: 1000, window_seconds: 900}
          - key: remote_address
            rate_limit: {requests: 1000, window_seconds: 900}
      - key: endpoint
        value: login_failure
        descriptors:
          - key: email
            backoff: {failures: 2, window_seconds: 60, block_seconds: 60, max_block_seconds: 60}
          - key: remote_address
            backoff: {failures: 50, window_seconds: 60, block_seconds: 60,
                      max_block_seconds: 60}
"""

pytestmark = pytest.mark.security(stride="E", asvs=("V6.4",))


@pytest.fixture(scope="module")
def deny_stack(
    stack_factory: StackFactory, tmp_path_factory: pytest.TempPathFactory
) -> RunningStack:
    rules = tmp_path_factory.mktemp("unverified") / "rules.yaml"
    rules.write_text(RULES)
    return stack_factory(
        services=["ratelimit", "auth"],
        env={
            "ratelimit": {"RATELIMIT_RULES": str(rules)},
            "auth": {"UNVERIFIED_LOGIN": "deny"},
        },
    )


def _login(stack: RunningStack, user: MobileUser, password: str) -> httpx.Response:
    return httpx.post(
        f"{stack.auth_url}/v1/auth/login",
        json={"email": user.email, "password": password},
        headers=user.headers,
        timeout=10,
    )


def _sessions(stack: RunningStack, user: MobileUser) -> int:
    rows = database_rows(
        stack.databases["auth"],
        "SELECT count(*) FROM refresh_families WHERE user_id = $1",
        uuid.UUID(user.user_id),
    )
    return int(rows[0][0])


def _events(stack: RunningStack, user: MobileUser) -> list[str]:
    rows = database_rows(
        stack.databases["auth"],
        "SELECT event_type FROM security_events WHERE user_id = $1 ORDER BY id",
        uuid.UUID(user.user_id),
    )
    return [row["event_type"] for row in rows]


def _assert_unverified(response: httpx.Response) -> None:
    body = assert_problem(response, 403)
    assert body["type"] == PROBLEM_TYPE
    assert body["error"] == "email_not_verified"
    assert "access_token" not in response.text
    assert "refresh_token" not in response.text
    assert "www-authenticate" not in response.headers


def test_deny_refuses_the_right_password_of_an_unverified_account(
    deny_stack: RunningStack,
) -> None:
    user = register(deny_stack.auth_url)
    # A wrong password is the 401 it always was, and tells nothing of verification.
    wrong = _login(deny_stack, user, WRONG)
    assert assert_problem(wrong, 401).get("type") != PROBLEM_TYPE
    assert "verif" not in wrong.text.lower()

    refused = _login(deny_stack, user, user.password)
    _assert_unverified(refused)
    assert _sessions(deny_stack, user) == 0
    assert _events(deny_stack, user).count("login_refused_unverified") == 1
    assert _events(deny_stack, user).count("login_failed") == 1  # the wrong password only
    assert "login_succeeded" not in _events(deny_stack, user)


def test_refusals_are_not_failures_for_the_backoff(deny_stack: RunningStack) -> None:
    user = register(deny_stack.auth_url)
    # Two failures would block the identity (RULES): three refusals in a row do not.
    for _ in range(3):
        _assert_unverified(_login(deny_stack, user, user.password))
    # And a refusal proves the password as a success does: it clears the earlier failure.
    assert _login(deny_stack, user, WRONG).status_code == 401
    _assert_unverified(_login(deny_stack, user, user.password))
    assert _login(deny_stack, user, WRONG).status_code == 401
    _assert_unverified(_login(deny_stack, user, user.password))


def test_the_mailed_link_verifies_without_signing_in_then_login_works(
    deny_stack: RunningStack,
) -> None:
    user = register(deny_stack.auth_url)
    mail = deny_stack.mail.wait_for(user.email, subject_contains="Confirm your email")
    _assert_unverified(_login(deny_stack, user, user.password))
    confirmed = httpx.post(
        f"{deny_stack.auth_url}/v1/auth/email-verification/confirm",
        json={"token": mail_token(mail)},
        timeout=10,
    )
    assert confirmed.status_code == 204, confirmed.text
    tokens = login(deny_stack.auth_url, user)
    assert tokens["access_token"]
    assert _sessions(deny_stack, user) == 1


def test_a_password_reset_verifies_the_address_it_reached(deny_stack: RunningStack) -> None:
    """The way back for an account whose verification mail is lost or expired."""
    user = register(deny_stack.auth_url)
    requested = httpx.post(
        f"{deny_stack.auth_url}/v1/auth/password-reset", json={"email": user.email}, timeout=10
    )
    assert requested.status_code == 202
    mail = deny_stack.mail.wait_for(user.email, subject_contains="Reset your")
    user.password = "Fresh-Lantern-47&"
    reset = httpx.post(
        f"{deny_stack.auth_url}/v1/auth/password-reset/confirm",
        json={"token": mail_token(mail), "newPassword": user.password},
        timeout=10,
    )
    assert reset.status_code == 204, reset.text
    assert "email_verified" in _events(deny_stack, user)
    assert login(deny_stack.auth_url, user)["access_token"]


def test_the_sign_in_page_refuses_an_unverified_account_and_remembers_nothing(
    deny_stack: RunningStack,
) -> None:
    user = register(deny_stack.auth_url)
    with browser(deny_stack.auth_url) as client:
        refused = sign_in(client, user)
        assert refused.status_code == 403
        assert "Confirm your email address" in refused.text
        assert "set-cookie" not in refused.headers
        # Not signed in: the device page still sends the browser to the sign-in form.
        device = client.get("/device")
        assert device.status_code == 303
        assert device.headers["location"].startswith("/signin")
    pages = database_rows(
        deny_stack.databases["auth"],
        "SELECT count(*) FROM page_sessions WHERE user_id = $1",
        uuid.UUID(user.user_id),
    )
    assert pages[0][0] == 0
    assert "page_signin_succeeded" not in _events(deny_stack, user)
