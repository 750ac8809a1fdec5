"""The login limit: 5 attempts per email per 15 minutes, then 429 with Retry-After,
whatever the letter case or surrounding spaces of the email."""

from __future__ import annotations

import httpx
import pytest

from .conftest import RunningStack
from .helpers import register

pytestmark = pytest.mark.security(stride="S", asvs=("V2.4", "V6.3"))


def _attempt(stack: RunningStack, email: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{stack.auth_url}/v1/auth/login", json={"email": email, "password": password}
    )


def test_sixth_attempt_is_429_even_with_the_right_password(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    variants = [
        user.email,
        user.email.upper(),
        f"  {user.email}  ",
        user.email.title(),
        user.email.swapcase(),
    ]
    for email in variants:
        assert _attempt(stack, email, "Wrong-Password-1!").status_code == 401
    blocked = _attempt(stack, user.email.upper(), user.password)
    assert blocked.status_code == 429
    assert blocked.headers["content-type"].startswith("application/problem+json")
    # The wait (at most the 900 s window) plus up to 10 % of jitter.
    assert 1 <= int(blocked.headers["retry-after"]) <= 990
    assert blocked.json()["status"] == 429
    assert "access_token" not in blocked.text


@pytest.mark.security(stride="I", asvs=("V6.3",))
def test_failed_login_bodies_do_not_reveal_whether_the_account_exists(
    stack: RunningStack,
) -> None:
    user = register(stack.auth_url)
    wrong_password = _attempt(stack, user.email, "Wrong-Password-1!")
    no_account = _attempt(stack, "nobody-" + user.email, "Wrong-Password-1!")
    assert wrong_password.status_code == no_account.status_code == 401
    strip = {"request_id", "instance"}
    assert {k: v for k, v in wrong_password.json().items() if k not in strip} == {
        k: v for k, v in no_account.json().items() if k not in strip
    }
