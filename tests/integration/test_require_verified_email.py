"""``REQUIRE_VERIFIED_EMAIL`` at the API (docs/email-verification.md): a listed route answers
403 ``email_not_verified`` to an access token whose ``email_verified`` is false, before
anything is written; once the address is confirmed through the mail, a refreshed token is
served; routes not listed serve unverified accounts as before."""

from __future__ import annotations

import uuid

import httpx
import pytest

from .conftest import RunningStack, StackFactory
from .helpers import (
    MobileUser,
    assert_problem,
    bearer,
    claims_of,
    database_rows,
    login,
    mail_code,
    mail_token,
    refresh,
    register,
)

PROBLEM_TYPE = "urn:bulwark:problem:email-not-verified"

pytestmark = pytest.mark.security(stride="E", asvs=("V8.2",))


@pytest.fixture(scope="module")
def verified_stack(stack_factory: StackFactory) -> RunningStack:
    """Notes need a verified address; the auth service keeps its default (``allow``)."""
    return stack_factory(env={"api": {"REQUIRE_VERIFIED_EMAIL": "createNote"}})


def _written(stack: RunningStack, user: MobileUser) -> tuple[int, int]:
    """The user's notes and stored Idempotency-Keys."""
    owner = uuid.UUID(user.user_id)
    notes = database_rows(
        stack.databases["api"], "SELECT count(*) FROM notes WHERE owner_id = $1", owner
    )
    keys = database_rows(
        stack.databases["api"], "SELECT count(*) FROM idempotency_keys WHERE owner_id = $1", owner
    )
    return int(notes[0][0]), int(keys[0][0])


def _create_note(stack: RunningStack, user: MobileUser, token: object, key: str) -> httpx.Response:
    return httpx.post(
        f"{stack.api_url}/v1/notes",
        json={"title": "Groceries", "body": "eggs"},
        headers={**bearer(token, user), "Idempotency-Key": f'"{key}"'},
        timeout=10,
    )


def _confirm(stack: RunningStack, body: dict[str, str], token: object = None) -> None:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    confirmed = httpx.post(
        f"{stack.auth_url}/v1/auth/email-verification/confirm",
        json=body,
        headers=headers,
        timeout=10,
    )
    assert confirmed.status_code == 204, confirmed.text


def test_an_unverified_token_is_refused_a_listed_route_and_nothing_is_written(
    verified_stack: RunningStack, stack: RunningStack
) -> None:
    assert "UNVERIFIED_LOGIN" not in verified_stack.env["auth"]  # allow: the login works
    user = register(verified_stack.auth_url)
    tokens = login(verified_stack.auth_url, user)
    assert claims_of(tokens["access_token"])["email_verified"] is False

    refused = _create_note(verified_stack, user, tokens["access_token"], "first-try")
    body = assert_problem(refused, 403)
    assert body["type"] == PROBLEM_TYPE
    assert body["error"] == "email_not_verified"
    assert "refresh" in str(body["detail"])
    assert "insufficient_scope" not in refused.headers.get("www-authenticate", "")
    assert _written(verified_stack, user) == (0, 0)

    # Routes not listed serve the unverified account as before.
    me = httpx.get(f"{verified_stack.api_url}/v1/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200
    listed = httpx.get(
        f"{verified_stack.api_url}/v1/notes", headers=bearer(tokens["access_token"], user)
    )
    assert listed.status_code == 200
    assert listed.json()["items"] == []

    # Without the setting (the default stack), the same unverified create is served.
    assert "REQUIRE_VERIFIED_EMAIL" not in stack.env["api"]
    other = register(stack.auth_url)
    unverified = login(stack.auth_url, other)["access_token"]
    assert _create_note(stack, other, unverified, "first-try").status_code == 201


def test_verifying_by_the_mailed_link_then_refreshing_opens_the_route(
    verified_stack: RunningStack,
) -> None:
    user = register(verified_stack.auth_url)
    mail = verified_stack.mail.wait_for(user.email, subject_contains="Confirm your email")
    tokens = login(verified_stack.auth_url, user)
    assert_problem(_create_note(verified_stack, user, tokens["access_token"], "k-1"), 403)

    _confirm(verified_stack, {"token": mail_token(mail)})

    # The token in hand still says false: the claim changes with the next access token.
    assert_problem(_create_note(verified_stack, user, tokens["access_token"], "k-2"), 403)
    refreshed = refresh(verified_stack.auth_url, str(tokens["refresh_token"]), user)
    assert refreshed.status_code == 200, refreshed.text
    fresh = refreshed.json()["access_token"]
    assert claims_of(fresh)["email_verified"] is True
    # The key of the refused create was never stored: it creates now.
    created = _create_note(verified_stack, user, fresh, "k-1")
    assert created.status_code == 201, created.text
    assert _written(verified_stack, user) == (1, 1)


def test_verifying_by_the_code_works_the_same(verified_stack: RunningStack) -> None:
    user = register(verified_stack.auth_url)
    mail = verified_stack.mail.wait_for(user.email, subject_contains="Confirm your email")
    tokens = login(verified_stack.auth_url, user)
    assert_problem(_create_note(verified_stack, user, tokens["access_token"], "by-code"), 403)
    _confirm(verified_stack, {"code": mail_code(mail)}, tokens["access_token"])
    fresh = refresh(verified_stack.auth_url, str(tokens["refresh_token"]), user).json()
    created = _create_note(verified_stack, user, fresh["access_token"], "by-code")
    assert created.status_code == 201, created.text
