"""Locking an intruder out (docs/account.md): an intruder who had the session and the password
asks to move the account to their address; the owner's password reset or change must end
that pending change, and an undo must leave the intruder's password useless."""

from __future__ import annotations

import httpx
import pytest

from .conftest import RunningStack, StackFactory
from .helpers import MobileUser, assert_problem, bearer, login, mail_token, random_email, register

NEW_PASSWORD = "Fresh-Lantern-47&"


@pytest.fixture(scope="module")
def accounts(stack_factory: StackFactory) -> RunningStack:
    return stack_factory()


def _post(stack: RunningStack, path: str, body: object, token: object = None) -> httpx.Response:
    headers = {"X-App-Version": "1.4.2", "X-Platform": "ios"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(f"{stack.auth_url}{path}", json=body, headers=headers, timeout=10)


def _intruder_asks_to_move(stack: RunningStack, victim: MobileUser) -> str:
    """The intruder, with the victim's session and password, asks for an email change to
    their own address; returns the link token that arrives there."""
    intruder_email = random_email()
    token = login(stack.auth_url, victim)["access_token"]
    asked = _post(
        stack,
        "/v1/auth/email-change",
        {"newEmail": intruder_email, "password": victim.password},
        token,
    )
    assert asked.status_code == 202, asked.text
    return mail_token(stack.mail.wait_for(intruder_email, subject_contains="new email address"))


def test_a_password_reset_ends_a_pending_email_change(accounts: RunningStack) -> None:
    victim = register(accounts.auth_url)
    intruders_link = _intruder_asks_to_move(accounts, victim)

    assert _post(accounts, "/v1/auth/password-reset", {"email": victim.email}).status_code == 202
    reset = mail_token(accounts.mail.wait_for(victim.email, subject_contains="Reset your"))
    done = _post(
        accounts, "/v1/auth/password-reset/confirm", {"token": reset, "newPassword": NEW_PASSWORD}
    )
    assert done.status_code == 204, done.text

    assert_problem(_post(accounts, "/v1/auth/email-change/confirm", {"token": intruders_link}), 400)
    victim.password = NEW_PASSWORD
    login(accounts.auth_url, victim)  # still the victim's address


def test_a_password_change_ends_a_pending_email_change(accounts: RunningStack) -> None:
    victim = register(accounts.auth_url)
    intruders_link = _intruder_asks_to_move(accounts, victim)
    token = login(accounts.auth_url, victim)["access_token"]
    changed = _post(
        accounts,
        "/v1/auth/password",
        {"currentPassword": victim.password, "newPassword": NEW_PASSWORD},
        token,
    )
    assert changed.status_code == 204, changed.text
    assert_problem(_post(accounts, "/v1/auth/email-change/confirm", {"token": intruders_link}), 400)


def test_an_undo_leaves_the_intruders_password_useless(accounts: RunningStack) -> None:
    victim = register(accounts.auth_url)
    old_email = victim.email
    intruders_link = _intruder_asks_to_move(accounts, victim)
    assert (
        _post(accounts, "/v1/auth/email-change/confirm", {"token": intruders_link}).status_code
        == 204
    )
    undo = mail_token(accounts.mail.wait_for(old_email, subject_contains="was changed"))
    assert _post(accounts, "/v1/auth/email-change/undo", {"token": undo}).status_code == 204

    # The password the intruder knows no longer signs in, even with the restored address.
    again = httpx.post(
        f"{accounts.auth_url}/v1/auth/login",
        json={"email": old_email, "password": victim.password},
        headers=victim.headers,
    )
    assert again.status_code == 401
    # The reset mailed to the restored address sets a new one.
    reset = mail_token(accounts.mail.wait_for(old_email, subject_contains="Reset your"))
    done = _post(
        accounts, "/v1/auth/password-reset/confirm", {"token": reset, "newPassword": NEW_PASSWORD}
    )
    assert done.status_code == 204, done.text
    victim.password = NEW_PASSWORD
    tokens = login(accounts.auth_url, victim)
    assert (
        httpx.get(f"{accounts.api_url}/v1/me", headers=bearer(tokens["access_token"])).status_code
        == 200
    )
