"""The pages behind the links in account mails (docs/account.md, "The pages behind the
links"), driven as a browser drives them: the link from a real mail (the stack's SMTP sink)
is opened, the form it shows is read and sent back with its cookies. Opening a link never
uses it; only the same-site form does, through the same flows as the JSON routes."""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage

import httpx
import pytest

from bulwark.auth.account.mailing import LINK_PAGES

from .conftest import RunningStack, StackFactory
from .helpers import (
    MobileUser,
    bearer,
    database_rows,
    login,
    mail_link,
    random_email,
    refresh,
    register,
)
from .html_forms import Form, form, forms, submit

NEW_PASSWORD = "Fresh-Lantern-47&"
INVALID_LINK = "This link is not valid"
BROKEN_LINK = "This link is incomplete"
FORGED = "not sent from this site"

pytestmark = pytest.mark.security(stride="SI", asvs=("V3.5", "V6.4"))


@pytest.fixture(scope="module")
def pages(stack_factory: StackFactory) -> RunningStack:
    """A stack of this module's own (its limits and mails are not shared), trusting the
    tests' ``X-Forwarded-For``: each test's browser has an address of its own."""
    return stack_factory(env={"auth": {"TRUSTED_PROXIES": "127.0.0.1"}})


@contextmanager
def _browser(stack: RunningStack) -> Iterator[httpx.Client]:
    """A browser (cookies kept, redirects not followed) from an address of its own, so that
    each test has its own ``account_code`` limit per IP."""
    ip = f"10.77.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"
    with httpx.Client(
        base_url=stack.auth_url,
        follow_redirects=False,
        timeout=10,
        headers={"X-Forwarded-For": ip},
    ) as client:
        yield client


def _verified(stack: RunningStack, user: MobileUser) -> bool:
    rows = database_rows(
        stack.databases["auth"],
        "SELECT email_verified_at FROM users WHERE id = $1",
        uuid.UUID(user.user_id),
    )
    return rows[0]["email_verified_at"] is not None


def _live_tokens(stack: RunningStack, user: MobileUser, purpose: str) -> int:
    rows = database_rows(
        stack.databases["auth"],
        "SELECT count(*) AS n FROM account_tokens WHERE user_id = $1 AND purpose = $2"
        " AND used_at IS NULL",
        uuid.UUID(user.user_id),
        purpose,
    )
    return int(rows[0]["n"])


def _can_log_in(stack: RunningStack, email: str, password: str) -> bool:
    response = httpx.post(
        f"{stack.auth_url}/v1/auth/login",
        json={"email": email, "password": password},
        headers=MobileUser(email=email).headers,
    )
    assert response.status_code in {200, 401}, response.text
    return response.status_code == 200


def _refused_within_a_second(stack: RunningStack, access_token: object) -> None:
    deadline = time.monotonic() + 1.0
    while httpx.get(f"{stack.api_url}/v1/me", headers=bearer(access_token)).status_code != 401:
        assert time.monotonic() < deadline, "the API still accepts the access token"
        time.sleep(0.05)


def _reset_mail(stack: RunningStack, user: MobileUser) -> EmailMessage:
    asked = httpx.post(f"{stack.auth_url}/v1/auth/password-reset", json={"email": user.email})
    assert asked.status_code == 202, asked.text
    return stack.mail.wait_for(user.email, subject_contains="Reset your")


def _open(browser: httpx.Client, url: str) -> tuple[httpx.Response, Form]:
    """Open a mailed link; the page and its form."""
    shown = browser.get(url)
    return shown, form(shown, "account")


def _message(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("text/html"), response.headers
    return response.text


def test_every_mailed_link_has_a_page_with_a_form_and_nothing_else(pages: RunningStack) -> None:
    token = secrets.token_urlsafe(32)
    with _browser(pages) as browser:
        for name in LINK_PAGES.values():
            shown, account = _open(browser, f"/account/{name}?token={token}")
            assert account.method == "post"
            assert account.action == f"/account/{name}"  # the token goes in the body
            assert account.inputs["token"] == token
            assert account.inputs["csrf_token"]
            assert ("new_password" in account.inputs) == (name == "reset-password")
            assert "<script" not in shown.text
        reset = browser.get(f"/account/reset-password?token={token}").text
        assert re.search(
            r'<input id="new_password" name="new_password" type="password"'
            r' autocomplete="new-password"',
            reset,
        ), reset
        unknown = browser.get(f"/account/delete-everything?token={token}")
        assert unknown.status_code == 404
        assert browser.post("/account/delete-everything", data={"token": token}).status_code == 404


def test_the_pages_are_not_cached_framed_scripted_or_referred(pages: RunningStack) -> None:
    user = register(pages.auth_url)
    url, _, _ = mail_link(pages.mail.wait_for(user.email, subject_contains="Confirm your email"))
    with _browser(pages) as browser:
        shown, account = _open(browser, url)
        done = submit(browser, shown, account)
        assert done.status_code == 200, done.text
        for response in (shown, done):
            csp = response.headers["content-security-policy"]
            assert "default-src 'none'" in csp
            assert "frame-ancestors 'none'" in csp
            assert "script-src" not in csp
            assert "form-action 'self'" in csp
            assert response.headers["cache-control"] == "no-store"
            assert response.headers["referrer-policy"] == "same-origin"
            assert response.headers["x-frame-options"] == "DENY"
            assert "<script" not in response.text


def test_opening_a_link_uses_nothing_the_form_uses_it_once(pages: RunningStack) -> None:
    user = register(pages.auth_url)
    url, name, token = mail_link(
        pages.mail.wait_for(user.email, subject_contains="Confirm your email")
    )
    assert name == "verify-email"
    # A mail scanner and a link preview open the link, without cookies; so does the user, twice.
    for _ in range(2):
        with _browser(pages) as scanner:
            assert scanner.get(url).status_code == 200
    with _browser(pages) as browser:
        _open(browser, url)
        shown, account = _open(browser, url)
        assert not _verified(pages, user)
        assert _live_tokens(pages, user, "verify_email") == 1

        done = submit(browser, shown, account)
        assert done.status_code == 200, done.text
        assert "Email confirmed" in _message(done)
        assert _verified(pages, user)
        # Used once: the same form again is the failure page, as is a link never issued.
        again = submit(browser, shown, account)
        assert again.status_code == 400
        assert INVALID_LINK in _message(again)
        assert "Email confirmed" not in again.text
        unknown = submit(browser, shown, account, token=secrets.token_urlsafe(32))
        assert unknown.status_code == 400
        assert INVALID_LINK in _message(unknown)
    assert token not in pages.log("auth")  # neither the GET's query nor the POST's body


def test_a_forged_or_cross_site_form_is_refused_and_spends_nothing(pages: RunningStack) -> None:
    user = register(pages.auth_url)
    phone = login(pages.auth_url, user)
    url, _, token = mail_link(_reset_mail(pages, user))
    with _browser(pages) as browser:
        shown, account = _open(browser, url)
        fields = {"token": token, "new_password": NEW_PASSWORD}
        attempts = [
            browser.post("/account/reset-password", data=fields),  # no CSRF token
            browser.post(
                "/account/reset-password", data={**fields, "csrf_token": "x" * 43}
            ),  # not the cookie's
            # Another site's form, even with the right token, is refused by the browser's word.
            browser.post(
                "/account/reset-password",
                data={**fields, "csrf_token": account.inputs["csrf_token"]},
                headers={"Sec-Fetch-Site": "cross-site"},
            ),
            browser.post(
                "/account/reset-password",
                data={**fields, "csrf_token": account.inputs["csrf_token"]},
                headers={"Origin": "https://evil.example"},
            ),
        ]
        for refused in attempts:
            assert refused.status_code == 403, refused.text
            assert FORGED in _message(refused)
        # Nothing happened: the old password works, the session lives, the link is unspent.
        assert _can_log_in(pages, user.email, user.password)
        assert httpx.get(f"{pages.api_url}/v1/me", headers=bearer(phone["access_token"])).is_success
        assert _live_tokens(pages, user, "password_reset") == 1
        done = submit(browser, shown, account, new_password=NEW_PASSWORD)
        assert done.status_code == 200, done.text


def test_a_reset_on_the_page_sets_the_password_and_ends_every_session(
    pages: RunningStack,
) -> None:
    user = register(pages.auth_url)
    phone, tablet = login(pages.auth_url, user), login(pages.auth_url, user)
    url, name, _ = mail_link(_reset_mail(pages, user))
    assert name == "reset-password"
    with _browser(pages) as browser:
        shown, account = _open(browser, url)
        weak = submit(browser, shown, account, new_password="sunshine")
        assert weak.status_code == 400
        assert "The password must" in weak.text  # the rule it broke...
        assert "sunshine" not in weak.text  # ...never the password
        again = forms(weak.text)["account"]
        assert again.inputs["token"] == account.inputs["token"]
        assert again.inputs["new_password"] == ""
        assert _live_tokens(pages, user, "password_reset") == 1  # the refusal spent nothing

        done = submit(browser, weak, again, new_password=NEW_PASSWORD)
        assert done.status_code == 200, done.text
        assert "Password changed" in _message(done)
        assert NEW_PASSWORD not in done.text

    for tokens in (phone, tablet):
        _refused_within_a_second(pages, tokens["access_token"])
        assert refresh(pages.auth_url, str(tokens["refresh_token"]), user).status_code == 400
    assert not _can_log_in(pages, user.email, user.password)
    assert _can_log_in(pages, user.email, NEW_PASSWORD)
    assert pages.mail.wait_for(user.email, subject_contains="password was changed")


def test_a_password_longer_than_the_routes_is_refused_before_any_work(
    pages: RunningStack,
) -> None:
    user = register(pages.auth_url)
    url, _, _ = mail_link(_reset_mail(pages, user))
    with _browser(pages) as browser:
        shown, account = _open(browser, url)
        long = submit(browser, shown, account, new_password="Aa1!" * 300)
        assert long.status_code == 400
        assert "too long" in long.text
        assert "Aa1!Aa1!" not in long.text
    assert _live_tokens(pages, user, "password_reset") == 1
    assert _can_log_in(pages, user.email, user.password)


def test_an_email_change_is_confirmed_and_undone_on_the_pages(pages: RunningStack) -> None:
    user = register(pages.auth_url)
    old_email, new_email = user.email, random_email()
    access_token = login(pages.auth_url, user)["access_token"]
    asked = httpx.post(
        f"{pages.auth_url}/v1/auth/email-change",
        json={"newEmail": new_email, "password": user.password},
        headers=bearer(access_token, user),
    )
    assert asked.status_code == 202, asked.text
    url, name, _ = mail_link(pages.mail.wait_for(new_email, subject_contains="new email address"))
    assert name == "confirm-email-change"
    with _browser(pages) as browser:
        shown, account = _open(browser, url)
        assert set(account.inputs) == {"csrf_token", "token"}  # the link alone: no code field
        assert _can_log_in(pages, old_email, user.password)  # opening it changed nothing
        done = submit(browser, shown, account)
        assert done.status_code == 200, done.text
        assert "Email changed" in _message(done)
    assert _can_log_in(pages, new_email, user.password)
    assert not _can_log_in(pages, old_email, user.password)

    url, name, _ = mail_link(pages.mail.wait_for(old_email, subject_contains="was changed"))
    assert name == "undo-email-change"
    session = login(pages.auth_url, MobileUser(email=new_email, password=user.password))
    with _browser(pages) as browser:
        shown, account = _open(browser, url)
        assert _can_log_in(pages, new_email, user.password)  # opening it changed nothing
        done = submit(browser, shown, account)
        assert done.status_code == 200, done.text
        assert "Change undone" in _message(done)
        again = submit(browser, shown, account)
        assert again.status_code == 400
        assert INVALID_LINK in again.text
    _refused_within_a_second(pages, session["access_token"])
    assert pages.mail.wait_for(old_email, subject_contains="Reset your")
    restored = database_rows(
        pages.databases["auth"], "SELECT email FROM users WHERE id = $1", uuid.UUID(user.user_id)
    )
    assert restored[0]["email"] == old_email
    # The password the changer knew is disabled until the mailed reset sets a new one.
    assert not _can_log_in(pages, old_email, user.password)
    assert not _can_log_in(pages, new_email, user.password)


def test_confirming_an_address_another_account_took_is_a_409_page(pages: RunningStack) -> None:
    user, squatter_email = register(pages.auth_url), random_email()
    access_token = login(pages.auth_url, user)["access_token"]
    httpx.post(
        f"{pages.auth_url}/v1/auth/email-change",
        json={"newEmail": squatter_email, "password": user.password},
        headers=bearer(access_token, user),
    )
    url, _, _ = mail_link(pages.mail.wait_for(squatter_email, subject_contains="new email address"))
    register(pages.auth_url, squatter_email)
    with _browser(pages) as browser:
        shown, account = _open(browser, url)
        taken = submit(browser, shown, account)
        assert taken.status_code == 409
        assert "already exists" in _message(taken)
    assert _can_log_in(pages, user.email, user.password)


def test_a_missing_or_malformed_token_is_a_400_page(pages: RunningStack) -> None:
    with _browser(pages) as browser:
        for query in ("", "?token=", "?token=" + "A" * 65, "?token=a%27%22%3Cb%3E", "?x=1"):
            shown = browser.get(f"/account/reset-password{query}")
            assert shown.status_code == 400, (query, shown.text)
            assert BROKEN_LINK in _message(shown)
            assert "account" not in forms(shown.text)
            assert shown.headers["cache-control"] == "no-store"
        unreadable = browser.get("/account/verify-email?token=a&token=b")
        assert unreadable.status_code == 400
        assert unreadable.headers["content-type"].startswith("text/html")
        shown, account = _open(browser, f"/account/verify-email?token={'A' * 43}")
        no_token = submit(browser, shown, account, token="")
        assert no_token.status_code == 400
        assert BROKEN_LINK in _message(no_token)
        as_json = browser.post("/account/verify-email", json={"token": "A" * 43})
        assert as_json.status_code == 400
        assert as_json.headers["content-type"].startswith("text/html")


def test_the_form_counts_against_the_account_code_limit(pages: RunningStack) -> None:
    user = register(pages.auth_url)
    url, _, _ = mail_link(pages.mail.wait_for(user.email, subject_contains="Confirm your email"))
    with _browser(pages) as browser:
        shown, account = _open(browser, url)
        answers = [
            submit(browser, shown, account, token=secrets.token_urlsafe(32)).status_code
            for _ in range(61)
        ]
        assert answers[:60] == [400] * 60
        assert answers[60] == 429
        limited = submit(browser, shown, account)
        assert limited.status_code == 429
        assert limited.headers["retry-after"]
        assert limited.headers["content-type"].startswith("text/html")
    # Refused before the flow: the link is unspent, and works from another address.
    assert not _verified(pages, user)
    with _browser(pages) as browser:
        shown, account = _open(browser, url)
        assert submit(browser, shown, account).status_code == 200
    assert _verified(pages, user)
