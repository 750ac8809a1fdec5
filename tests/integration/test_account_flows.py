"""The account's life end to end (docs/account.md): verification, password reset and
change, email change and its undo, through the real services and a real SMTP server (the
stack's sink), reading the mails as a user would."""

from __future__ import annotations

import statistics
import time
import uuid
from email.message import EmailMessage

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
    mail_text,
    mail_token,
    random_email,
    refresh,
    register,
)

NEW_PASSWORD = "Fresh-Lantern-47&"

pytestmark = pytest.mark.security(stride="SRIDE", asvs=("V6.4", "V6.2", "V7.4"))


@pytest.fixture(scope="module")
def accounts(stack_factory: StackFactory) -> RunningStack:
    """A stack of this module's own: its limits and mails are not shared."""
    return stack_factory()


def _next_mail(stack: RunningStack, to: str, subject: str, *, after: EmailMessage) -> EmailMessage:
    """The newest mail to ``to`` about ``subject`` other than ``after``, within 10 s."""
    deadline = time.monotonic() + 10
    while True:
        mail = stack.mail.wait_for(to, subject_contains=subject)
        if mail["Message-ID"] != after["Message-ID"]:
            return mail
        assert time.monotonic() < deadline, "no second mail"
        time.sleep(0.1)


def _me(stack: RunningStack, access_token: object) -> int:
    return httpx.get(f"{stack.api_url}/v1/me", headers=bearer(access_token)).status_code


def _post(
    stack: RunningStack,
    path: str,
    body: object,
    user: MobileUser | None = None,
    token: object = None,
) -> httpx.Response:
    headers = dict(user.headers if user else {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(f"{stack.auth_url}{path}", json=body, headers=headers, timeout=10)


def _refused_within_a_second(stack: RunningStack, access_token: object) -> None:
    deadline = time.monotonic() + 1.0
    while _me(stack, access_token) != 401:
        assert time.monotonic() < deadline, "the API still accepts the access token"
        time.sleep(0.05)


def test_registration_mails_a_code_that_verifies_the_address(accounts: RunningStack) -> None:
    user = register(accounts.auth_url)
    mail = accounts.mail.wait_for(user.email, subject_contains="Confirm your email")
    tokens = login(accounts.auth_url, user)
    assert claims_of(tokens["access_token"])["email_verified"] is False

    wrong = "000000" if mail_code(mail) != "000000" else "111111"
    assert_problem(
        _post(
            accounts,
            "/v1/auth/email-verification/confirm",
            {"code": wrong},
            user,
            tokens["access_token"],
        ),
        400,
    )
    ok = _post(
        accounts,
        "/v1/auth/email-verification/confirm",
        {"code": mail_code(mail)},
        user,
        tokens["access_token"],
    )
    assert ok.status_code == 204, ok.text
    refreshed = refresh(accounts.auth_url, str(tokens["refresh_token"]), user).json()
    assert claims_of(refreshed["access_token"])["email_verified"] is True
    # Used once: neither the code nor the link works again.
    again = _post(
        accounts,
        "/v1/auth/email-verification/confirm",
        {"code": mail_code(mail)},
        user,
        refreshed["access_token"],
    )
    assert_problem(again, 400)
    assert_problem(
        _post(accounts, "/v1/auth/email-verification/confirm", {"token": mail_token(mail)}), 400
    )


def test_the_link_verifies_without_signing_in_and_codes_are_stored_hashed(
    accounts: RunningStack,
) -> None:
    user = register(accounts.auth_url)
    mail = accounts.mail.wait_for(user.email, subject_contains="Confirm your email")
    rows = database_rows(
        accounts.databases["auth"],
        "SELECT token_hash, code_hash FROM account_tokens WHERE user_id = $1",
        uuid.UUID(user.user_id),
    )
    stored = b"".join(bytes(r["token_hash"]) + bytes(r["code_hash"]) for r in rows)
    assert mail_token(mail).encode() not in stored
    assert mail_code(mail).encode() not in stored
    assert (
        _post(
            accounts, "/v1/auth/email-verification/confirm", {"token": mail_token(mail)}
        ).status_code
        == 204
    )
    verified = database_rows(
        accounts.databases["auth"],
        "SELECT email_verified_at FROM users WHERE id = $1",
        uuid.UUID(user.user_id),
    )
    assert verified[0]["email_verified_at"] is not None


def test_five_wrong_codes_spend_the_verification(accounts: RunningStack) -> None:
    user = register(accounts.auth_url)
    mail = accounts.mail.wait_for(user.email, subject_contains="Confirm your email")
    token = login(accounts.auth_url, user)["access_token"]
    right = mail_code(mail)
    wrongs = [f"{(int(right) + n) % 10**6:06d}" for n in range(1, 6)]
    for wrong in wrongs:
        assert_problem(
            _post(accounts, "/v1/auth/email-verification/confirm", {"code": wrong}, user, token),
            400,
        )
    late = _post(accounts, "/v1/auth/email-verification/confirm", {"code": right}, user, token)
    assert_problem(late, 400)


def test_a_code_without_a_bearer_token_is_401(accounts: RunningStack) -> None:
    response = _post(accounts, "/v1/auth/email-verification/confirm", {"code": "123456"})
    assert_problem(response, 401)


# Password reset


def test_a_reset_is_answered_the_same_whether_or_not_the_account_exists(
    accounts: RunningStack,
) -> None:
    user = register(accounts.auth_url)
    known = _post(accounts, "/v1/auth/password-reset", {"email": user.email})
    unknown = _post(accounts, "/v1/auth/password-reset", {"email": random_email()})
    assert known.status_code == unknown.status_code == 202
    assert known.content == unknown.content
    assert known.headers["content-type"] == unknown.headers["content-type"]
    assert accounts.mail.wait_for(user.email, subject_contains="Reset your")


def test_reset_timing_does_not_tell_whether_the_account_exists(accounts: RunningStack) -> None:
    user = register(accounts.auth_url)
    with httpx.Client(base_url=accounts.auth_url, timeout=10) as client:
        known: list[float] = []
        unknown: list[float] = []
        for round_ in range(5):  # the address allows 5 an hour
            for email, samples in ((user.email, known), (random_email(), unknown)):
                started = time.perf_counter()
                response = client.post(
                    "/v1/auth/password-reset",
                    json={"email": email},
                    headers={"X-Forwarded-For": f"10.9.{round_}.1"},
                )
                samples.append(time.perf_counter() - started)
                assert response.status_code == 202
                time.sleep(0.1)  # the known address's background lookup ends before the next
    # The lookup runs after the answer: the medians differ by noise only.
    assert abs(statistics.median(known) - statistics.median(unknown)) < 0.025


def test_a_reset_goes_to_the_stored_address_never_the_typed_one(accounts: RunningStack) -> None:
    user = register(accounts.auth_url)
    typed = "\uff35" + user.email[1:].upper()  # fullwidth U and upper case: NFKC-equal
    response = _post(accounts, "/v1/auth/password-reset", {"email": typed})
    assert response.status_code == 202
    mail = accounts.mail.wait_for(user.email, subject_contains="Reset your")
    assert mail["To"] == user.email
    time.sleep(0.5)
    assert all(m["To"] != typed for m in accounts.mail.messages())


def test_a_list_of_addresses_is_refused_and_mails_nobody(accounts: RunningStack) -> None:
    victim, attacker = register(accounts.auth_url), random_email()
    before = len(accounts.mail.messages())
    response = _post(accounts, "/v1/auth/password-reset", {"email": [victim.email, attacker]})
    assert_problem(response, 400)
    time.sleep(0.5)
    assert not [m for m in accounts.mail.messages()[before:] if "Reset" in str(m["Subject"])]


def test_a_reset_sets_the_password_and_ends_every_session(accounts: RunningStack) -> None:
    user = register(accounts.auth_url)
    phone, tablet = login(accounts.auth_url, user), login(accounts.auth_url, user)
    assert _post(accounts, "/v1/auth/password-reset", {"email": user.email}).status_code == 202
    mail = accounts.mail.wait_for(user.email, subject_contains="Reset your")

    weak = _post(
        accounts,
        "/v1/auth/password-reset/confirm",
        {"token": mail_token(mail), "newPassword": "sunshine"},
    )
    body = assert_problem(weak, 400)
    assert body["errors"][0]["field"] == "newPassword"  # type: ignore[index]
    assert "sunshine" not in weak.text  # the rule, never the value
    done = _post(
        accounts,
        "/v1/auth/password-reset/confirm",
        {"token": mail_token(mail), "newPassword": NEW_PASSWORD},
    )
    assert done.status_code == 204, done.text  # the weak try left the link usable

    for tokens in (phone, tablet):
        _refused_within_a_second(accounts, tokens["access_token"])
        assert refresh(accounts.auth_url, str(tokens["refresh_token"]), user).status_code == 400
    old = httpx.post(
        f"{accounts.auth_url}/v1/auth/login",
        json={"email": user.email, "password": user.password},
        headers=user.headers,
    )
    assert old.status_code == 401
    user.password = NEW_PASSWORD
    login(accounts.auth_url, user)
    assert accounts.mail.wait_for(user.email, subject_contains="password was changed")
    reused = _post(
        accounts,
        "/v1/auth/password-reset/confirm",
        {"token": mail_token(mail), "newPassword": "Another-Lantern-58&"},
    )
    assert_problem(reused, 400)


def test_a_reset_by_code_and_an_older_mail_stops_working(accounts: RunningStack) -> None:
    user = register(accounts.auth_url)
    _post(accounts, "/v1/auth/password-reset", {"email": user.email})
    first = accounts.mail.wait_for(user.email, subject_contains="Reset your")
    _post(accounts, "/v1/auth/password-reset", {"email": user.email})
    second = _next_mail(accounts, user.email, "Reset your", after=first)
    stale = _post(
        accounts,
        "/v1/auth/password-reset/confirm",
        {"token": mail_token(first), "newPassword": NEW_PASSWORD},
    )
    assert_problem(stale, 400)
    other = register(accounts.auth_url)
    foreign = _post(
        accounts,
        "/v1/auth/password-reset/confirm",
        {"email": other.email, "code": mail_code(second), "newPassword": NEW_PASSWORD},
    )
    assert_problem(foreign, 400)
    done = _post(
        accounts,
        "/v1/auth/password-reset/confirm",
        {"email": user.email, "code": mail_code(second), "newPassword": NEW_PASSWORD},
    )
    assert done.status_code == 204, done.text


def test_an_expired_reset_link_is_refused(accounts: RunningStack) -> None:
    user = register(accounts.auth_url)
    _post(accounts, "/v1/auth/password-reset", {"email": user.email})
    mail = accounts.mail.wait_for(user.email, subject_contains="Reset your")
    database_rows(
        accounts.databases["auth"],
        "UPDATE account_tokens SET expires_at = now() - interval '1 second' WHERE user_id = $1",
        uuid.UUID(user.user_id),
    )
    late = _post(
        accounts,
        "/v1/auth/password-reset/confirm",
        {"token": mail_token(mail), "newPassword": NEW_PASSWORD},
    )
    assert_problem(late, 400)


# Password change


def test_changing_the_password_keeps_this_session_and_ends_the_others(
    accounts: RunningStack,
) -> None:
    user = register(accounts.auth_url)
    this, other = login(accounts.auth_url, user), login(accounts.auth_url, user)
    wrong = _post(
        accounts,
        "/v1/auth/password",
        {"currentPassword": "Not-The-Password-1!", "newPassword": NEW_PASSWORD},
        user,
        this["access_token"],
    )
    assert_problem(wrong, 400)
    done = _post(
        accounts,
        "/v1/auth/password",
        {"currentPassword": user.password, "newPassword": NEW_PASSWORD},
        user,
        this["access_token"],
    )
    assert done.status_code == 204, done.text
    _refused_within_a_second(accounts, other["access_token"])
    assert _me(accounts, this["access_token"]) == 200
    assert refresh(accounts.auth_url, str(this["refresh_token"]), user).status_code == 200
    assert accounts.mail.wait_for(user.email, subject_contains="password was changed")


# Email change


def test_an_email_change_takes_effect_only_when_the_new_address_confirms(
    accounts: RunningStack,
) -> None:
    user = register(accounts.auth_url)
    old_email, new_email = user.email, random_email()
    token = login(accounts.auth_url, user)["access_token"]
    wrong = _post(
        accounts,
        "/v1/auth/email-change",
        {"newEmail": new_email, "password": "Not-The-Password-1!"},
        user,
        token,
    )
    assert_problem(wrong, 400)
    asked = _post(
        accounts,
        "/v1/auth/email-change",
        {"newEmail": new_email, "password": user.password},
        user,
        token,
    )
    assert asked.status_code == 202, asked.text
    mail = accounts.mail.wait_for(new_email, subject_contains="new email address")
    login(accounts.auth_url, user)  # the old address still signs in

    confirmed = _post(accounts, "/v1/auth/email-change/confirm", {"token": mail_token(mail)})
    assert confirmed.status_code == 204, confirmed.text
    notice = accounts.mail.wait_for(old_email, subject_contains="was changed")
    assert new_email not in mail_text(notice)  # masked
    user.email = new_email
    tokens = login(accounts.auth_url, user)
    assert claims_of(tokens["access_token"])["email_verified"] is True

    undone = _post(accounts, "/v1/auth/email-change/undo", {"token": mail_token(notice)})
    assert undone.status_code == 204, undone.text
    _refused_within_a_second(accounts, tokens["access_token"])
    assert accounts.mail.wait_for(old_email, subject_contains="Reset your")
    restored = database_rows(
        accounts.databases["auth"], "SELECT email FROM users WHERE id = $1", uuid.UUID(user.user_id)
    )
    assert restored[0]["email"] == old_email


def test_confirming_an_address_another_account_took_is_409(accounts: RunningStack) -> None:
    user, squatter_email = register(accounts.auth_url), random_email()
    token = login(accounts.auth_url, user)["access_token"]
    _post(
        accounts,
        "/v1/auth/email-change",
        {"newEmail": squatter_email, "password": user.password},
        user,
        token,
    )
    mail = accounts.mail.wait_for(squatter_email, subject_contains="new email address")
    register(accounts.auth_url, squatter_email)
    assert_problem(
        _post(accounts, "/v1/auth/email-change/confirm", {"token": mail_token(mail)}), 409
    )


# Limits


def test_reset_requests_are_limited_per_address_whatever_its_spelling(
    accounts: RunningStack,
) -> None:
    user = register(accounts.auth_url)
    spellings = [user.email, user.email.upper(), "\uff35" + user.email[1:]]
    answers = [
        _post(accounts, "/v1/auth/password-reset", {"email": spellings[n % 3]}).status_code
        for n in range(6)
    ]
    assert answers == [202] * 5 + [429]
    assert _post(accounts, "/v1/auth/password-reset", {"email": random_email()}).status_code == 202


def test_codes_are_limited_per_account(accounts: RunningStack) -> None:
    user = register(accounts.auth_url)
    answers = [
        _post(
            accounts,
            "/v1/auth/password-reset/confirm",
            {"email": user.email, "code": f"{n:06d}", "newPassword": NEW_PASSWORD},
        ).status_code
        for n in range(11)
    ]
    assert answers == [400] * 10 + [429]


def test_password_checks_of_a_signed_in_user_are_limited(accounts: RunningStack) -> None:
    user = register(accounts.auth_url)
    token = login(accounts.auth_url, user)["access_token"]
    wrong = {"currentPassword": "Not-The-Password-1!", "newPassword": NEW_PASSWORD}
    answers = [
        _post(accounts, "/v1/auth/password", wrong, user, token).status_code for _ in range(5)
    ]
    right = {"currentPassword": user.password, "newPassword": NEW_PASSWORD}
    answers.append(_post(accounts, "/v1/auth/password", right, user, token).status_code)
    assert answers == [400] * 5 + [429]  # a stolen access token is no password oracle
    user_login = httpx.post(
        f"{accounts.auth_url}/v1/auth/login",
        json={"email": user.email, "password": user.password},
        headers=user.headers,
    )
    assert user_login.status_code == 200  # the password did not change


def test_mails_a_signed_in_user_asks_for_are_limited(accounts: RunningStack) -> None:
    user = register(accounts.auth_url)
    token = login(accounts.auth_url, user)["access_token"]
    answers = [
        _post(accounts, "/v1/auth/email-verification", None, user, token).status_code
        for _ in range(6)
    ]
    assert answers == [202] * 5 + [429]


def test_confirming_a_code_tells_nothing_about_the_address(accounts: RunningStack) -> None:
    user, nobody = register(accounts.auth_url), random_email()

    def confirm(email: str, password: str) -> httpx.Response:
        body = {"email": email, "code": "123456", "newPassword": password}
        return _post(accounts, "/v1/auth/password-reset/confirm", body)

    def shape(response: httpx.Response) -> tuple[int, object, object]:
        body = response.json()
        return response.status_code, body.get("type"), body.get("errors") or body.get("detail")

    # A weak password is refused the same way for an address with or without an account,
    assert shape(confirm(user.email, "sunshine")) == shape(confirm(nobody, "sunshine"))
    # and a wrong code the same way too, after the same work (the password is hashed).
    known, unknown = confirm(user.email, NEW_PASSWORD), confirm(nobody, NEW_PASSWORD)
    assert shape(known) == shape(unknown)
    assert known.status_code == 400
