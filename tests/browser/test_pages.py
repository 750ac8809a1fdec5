"""The auth service's pages in a real browser (chromium, at a phone's width): a person signs
in and approves or denies a device's request (RFC 8628), types a wrong or an expired code,
and a form posted without its CSRF token is refused. The device's side is played over HTTP:
it starts the grant and polls the token endpoint. Each page kept in ``docs/screenshots/``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, Response

from bulwark.auth.pages.rendering import SCOPE_DESCRIPTIONS
from tests.integration.conftest import RunningStack, StackFactory
from tests.integration.helpers import MobileUser, bearer, register
from tests.integration.oauth_pages import DEVICE_GRANT, TV

from .conftest import PHONE, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.security(stride="S", asvs=("V10.4",))]

DEVICE_CODE_TTL = 10  # seconds: the shortest the auth service takes
INVALID_CODE = "That code is not valid or has expired."


@pytest.fixture(scope="module")
def stack(stack_factory: StackFactory) -> RunningStack:
    """A stack whose auth service knows the TV app, polling every second."""
    env = {"OAUTH_CLIENTS": json.dumps([TV]), "DEVICE_POLL_INTERVAL_SECONDS": "1"}
    return stack_factory(env={"auth": env})


@pytest.fixture(scope="module")
def short_lived(stack_factory: StackFactory) -> RunningStack:
    """The same, with device codes that expire after ``DEVICE_CODE_TTL`` seconds."""
    env = {"OAUTH_CLIENTS": json.dumps([TV]), "DEVICE_CODE_TTL_SECONDS": str(DEVICE_CODE_TTL)}
    return stack_factory(env={"auth": env})


def start_device(stack: RunningStack) -> dict[str, Any]:
    """The TV asks for a code (RFC 8628 §3.1); the device authorization response."""
    response = httpx.post(
        f"{stack.auth_url}/oauth2/device_authorization",
        data={"client_id": "tv-app", "scope": "api"},
    )
    assert response.status_code == 200, response.text
    started: dict[str, Any] = response.json()
    return started


def ask_for_tokens(stack: RunningStack, device: dict[str, Any]) -> httpx.Response:
    """One device access token request (RFC 8628 §3.4)."""
    return httpx.post(
        f"{stack.auth_url}/oauth2/token",
        data={
            "grant_type": DEVICE_GRANT,
            "device_code": device["device_code"],
            "client_id": "tv-app",
        },
    )


def poll(stack: RunningStack, device: dict[str, Any], *, timeout: float = 20) -> httpx.Response:
    """The TV polls the token endpoint (RFC 8628 §3.4) until the answer is not
    ``authorization_pending`` (waiting ``interval`` seconds, more after ``slow_down``)."""
    interval = float(device.get("interval", 5))
    deadline = time.monotonic() + timeout
    while True:
        response = ask_for_tokens(stack, device)
        error = response.json().get("error") if response.status_code == 400 else None
        if error not in {"authorization_pending", "slow_down"}:
            return response
        interval += 5 if error == "slow_down" else 0
        assert time.monotonic() + interval < deadline, f"still {error} after {timeout} s"
        time.sleep(interval)


def navigation(page: Page, act: Callable[[], object]) -> Response:
    """Do ``act`` (a click, a submit) and return the response of the page it leads to (after
    any redirects)."""
    with page.expect_navigation() as navigated:
        act()
    response = navigated.value
    assert response is not None
    return response


def keep(page: Page, name: str) -> None:
    """Screenshot ``page`` as ``docs/screenshots/<name>.png``, once it fits a phone's width
    (nothing to scroll sideways)."""
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{name}: {width} CSS pixels wide, wider than a phone"
    screenshot(page, name)


def sign_in(page: Page, user: MobileUser, *, keep_as: str | None = None) -> Response:
    """On the sign-in page: sign ``user`` in; the response of the page it leads to."""
    assert "/signin?next=" in page.url, page.url
    form = page.locator("form#signin")
    if keep_as:
        keep(page, keep_as)
    form.locator('[name="email"]').fill(user.email)
    form.locator('[name="password"]').fill(user.password)
    return navigation(page, form.get_by_role("button", name="Sign in").click)


def open_consent(
    page: Page, stack: RunningStack, device: dict[str, Any], email: str | None = None
) -> Response:
    """A new user opens the complete verification URI, signs in, and is shown the consent."""
    page.goto(device["verification_uri_complete"])
    consent = sign_in(page, register(stack.auth_url, email))
    assert consent.status == 200
    assert page.locator("form#consent").is_visible()
    return consent


def test_sign_in_then_type_the_code_and_approve(stack: RunningStack, page: Page) -> None:
    device = start_device(stack)
    page.goto(device["verification_uri"])
    entered = sign_in(page, register(stack.auth_url, "alex@example.com"), keep_as="signin")
    assert entered.status == 200

    code_form = page.locator("form#device-code")
    keep(page, "device-code")
    typed = device["user_code"].replace("-", "").lower()  # case and dash do not matter
    code_form.locator('[name="user_code"]').fill(typed)
    consent = navigation(page, lambda: code_form.locator('[name="user_code"]').press("Enter"))
    assert consent.status == 200
    form = page.locator("form#consent")
    assert "Living-room TV" in page.inner_text("body")
    assert SCOPE_DESCRIPTIONS["api"] in page.inner_text("body")  # the scope, in words
    keep(page, "consent")

    done = navigation(page, form.get_by_role("button", name="Approve").click)
    assert done.status == 200
    assert "Device connected" in page.content()
    keep(page, "device-approved")

    tokens = poll(stack, device)
    assert tokens.status_code == 200, tokens.text
    me = httpx.get(f"{stack.api_url}/v1/me", headers=bearer(tokens.json()["access_token"]))
    assert me.status_code == 200, me.text


def test_deny(stack: RunningStack, page: Page) -> None:
    device = start_device(stack)
    open_consent(page, stack, device, "kim@example.com")
    deny = page.locator("form#consent").get_by_role("button", name="Deny")
    done = navigation(page, deny.click)
    assert done.status == 200
    assert "Request denied" in page.content()
    keep(page, "device-denied")

    answer = poll(stack, device)
    assert answer.status_code == 400
    assert answer.json()["error"] == "access_denied"


def test_a_wrong_code_is_an_error_page(stack: RunningStack, page: Page) -> None:
    start_device(stack)  # a code exists, but not the one typed
    page.goto(f"{stack.auth_url}/device")
    sign_in(page, register(stack.auth_url, "sam@example.com"))
    code_form = page.locator("form#device-code")
    code_form.locator('[name="user_code"]').fill("BCDF-GHJK")
    answer = navigation(page, lambda: code_form.locator('[name="user_code"]').press("Enter"))
    assert answer.status == 400
    assert INVALID_CODE in page.content()
    keep(page, "error")


def test_an_expired_code_is_an_error_page(short_lived: RunningStack, page: Page) -> None:
    device = start_device(short_lived)
    assert device["expires_in"] <= DEVICE_CODE_TTL
    expires = time.monotonic() + device["expires_in"]
    page.goto(f"{short_lived.auth_url}/device")
    sign_in(page, register(short_lived.auth_url))
    time.sleep(max(0.0, expires - time.monotonic()) + 1)

    code_form = page.locator("form#device-code")
    code_form.locator('[name="user_code"]').fill(device["user_code"])
    answer = navigation(page, lambda: code_form.locator('[name="user_code"]').press("Enter"))
    assert answer.status == 400
    assert INVALID_CODE in page.content()

    token = poll(short_lived, device)
    assert token.status_code == 400
    assert token.json()["error"] == "expired_token"  # RFC 8628 §3.5


@pytest.mark.security(stride="T", asvs=("V3.5",))
def test_a_consent_posted_without_its_csrf_token_is_refused(
    stack: RunningStack, page: Page
) -> None:
    device = start_device(stack)
    open_consent(page, stack, device)
    form = page.locator("form#consent")
    form.locator('[name="csrf_token"]').evaluate("input => input.remove()")
    refused = navigation(page, form.get_by_role("button", name="Approve").click)
    assert refused.status == 403
    assert refused.headers["content-type"].startswith("text/html")
    assert "Device connected" not in page.content()

    answer = ask_for_tokens(stack, device)
    assert answer.json().get("error") in {"authorization_pending", "slow_down"}, answer.text


@pytest.mark.security(stride="T", asvs=("V3.5",))
def test_a_sign_in_posted_without_its_csrf_token_is_refused(
    stack: RunningStack, page: Page
) -> None:
    user = register(stack.auth_url)
    page.goto(f"{stack.auth_url}/device")
    form = page.locator("form#signin")
    form.locator('[name="csrf_token"]').evaluate("input => input.remove()")
    form.locator('[name="email"]').fill(user.email)
    form.locator('[name="password"]').fill(user.password)
    refused = navigation(page, form.get_by_role("button", name="Sign in").click)
    assert refused.status == 403
    assert refused.headers["content-type"].startswith("text/html")
    page.goto(f"{stack.auth_url}/device")
    assert "/signin?next=" in page.url, page.url  # still not signed in
