"""The canary: full sessions, failures and hostile requests against a stack of its own, then
every byte every service wrote (stdout and stderr of auth, api and ratelimit, from start-up
to shutdown) is searched for every secret the sessions used, raw and in the encodings a log
pipeline could produce (JSON escapes, URL encoding, card digits with and without spaces)."""

from __future__ import annotations

import base64
import json
import secrets
import urllib.parse
from typing import Any

import httpx
import pytest

from .conftest import RunningStack, StackFactory
from .helpers import MobileUser, random_email

pytestmark = pytest.mark.security(stride="I", asvs=("V14.2", "V16.2"))

SERVICES = ("auth", "api", "ratelimit")


def _luhn_card(prefix: str = "4") -> str:
    """A fresh 16-digit number that passes the Luhn check (not a real card)."""
    body = prefix + "".join(secrets.choice("0123456789") for _ in range(14))
    total = 0
    for index, char in enumerate(reversed(body)):
        value = int(char) * (2 if index % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return body + str((10 - total % 10) % 10)


def _ssn() -> str:
    return f"{secrets.randbelow(600) + 100:03d}-{secrets.randbelow(89) + 10:02d}-" + (
        f"{secrets.randbelow(8999) + 1000:04d}"
    )


def _password() -> str:
    # Non-ASCII on purpose: the log renderer writes it as \\u escapes, which are checked too.
    # Not "Canary-...": the password policy refuses one containing the display name.
    return f"Tripwire-{secrets.token_hex(6)}-Pässwort!"


def _encodings(secret: str) -> set[str]:
    forms = {
        secret,
        json.dumps(secret)[1:-1],  # JSON, non-ASCII as \\uXXXX
        json.dumps(secret, ensure_ascii=False)[1:-1],
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
    }
    digits = secret.replace(" ", "").replace("-", "")
    if digits.isdigit() and len(digits) >= 13:  # a card number: every usual grouping
        groups = [digits[i : i + 4] for i in range(0, len(digits), 4)]
        forms |= {digits, " ".join(groups), "-".join(groups)}
    return {form for form in forms if len(form) >= 8}


class Canary:
    """A client that remembers every secret it sends or receives."""

    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        self.secrets: set[str] = set()
        self.statuses: list[int] = []

    def keep(self, *values: object) -> None:
        for value in values:
            self.secrets.add(str(value))
            if str(value).count(".") == 2:  # a JWT: its signature alone too
                self.secrets.add(str(value).rsplit(".", 1)[1])

    def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = httpx.request(method, url, timeout=10, **kwargs)
        self.statuses.append(response.status_code)
        return response

    def tokens(self, response: httpx.Response) -> tuple[str, str]:
        assert response.status_code == 200, response.text
        body = response.json()
        self.keep(body["access_token"], body["refresh_token"])
        return body["access_token"], body["refresh_token"]


def _run_sessions(canary: Canary) -> None:  # noqa: PLR0915  # one scripted story
    auth, api = canary.stack.auth_url, canary.stack.api_url
    user = MobileUser(email=random_email(), password=_password())
    wrong, card, ssn = _password(), _luhn_card(), _ssn()
    device_code, user_code = secrets.token_urlsafe(32), secrets.token_hex(4).upper()
    verifier, code = secrets.token_urlsafe(48), secrets.token_urlsafe(24)
    canary.keep(user.password, wrong, card, ssn, device_code, user_code, verifier, code)
    basic = base64.b64encode(f"{user.email}:{user.password}".encode()).decode()
    canary.keep(basic)

    registered = canary.call(
        "POST",
        f"{auth}/v1/users",
        json={"email": user.email, "password": user.password, "displayName": "Canary"},
        headers=user.headers,
    )
    assert registered.status_code == 201, registered.text
    login = {"email": user.email, "password": user.password, "device": "Canary phone"}
    access, first = canary.tokens(
        canary.call("POST", f"{auth}/v1/auth/login", json=login, headers=user.headers)
    )
    me = canary.call(
        "GET", f"{api}/v1/me", headers={**user.headers, "Authorization": f"Bearer {access}"}
    )
    assert me.status_code == 200
    authorized = {**user.headers, "Authorization": f"Bearer {access}"}
    note = f"card {card[:4]} {card[4:8]} {card[8:12]} {card[12:]} ssn {ssn} pw {user.password}"
    created = canary.call(
        "POST", f"{api}/v1/notes", json={"title": "t", "body": note}, headers=authorized
    )
    assert created.status_code == 201, created.text
    for bad in ({"title": "t", "cardNumber": card}, {"title": ssn, "ssn": ssn, "cvv": "123"}):
        canary.call("POST", f"{api}/v1/notes", json=bad, headers=authorized)

    # Rotation, a benign retry, then a reuse that ends the family.
    _, second = canary.tokens(
        canary.call(
            "POST",
            f"{auth}/oauth2/token",
            data={"grant_type": "refresh_token", "refresh_token": first},
            headers=user.headers,
        )
    )
    canary.tokens(
        canary.call(
            "POST",
            f"{auth}/oauth2/token",
            data={"grant_type": "refresh_token", "refresh_token": second},
            headers=user.headers,
        )
    )
    reuse = canary.call(
        "POST",
        f"{auth}/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": first},
        headers=user.headers,
    )
    assert reuse.status_code == 400
    canary.call("GET", f"{api}/v1/me", headers=authorized)  # its session has ended

    # A new session bound to a device id that looks like a refresh token, then logout.
    odd_device = MobileUser(
        email=user.email, password=user.password, device_id="brt_" + secrets.token_urlsafe(32)
    )
    canary.keep(odd_device.device_id)
    access, refresh_token = canary.tokens(
        canary.call("POST", f"{auth}/v1/auth/login", json=login, headers=odd_device.headers)
    )
    bearer = {**odd_device.headers, "Authorization": f"Bearer {access}"}
    assert canary.call("GET", f"{auth}/v1/auth/sessions", headers=bearer).status_code == 200
    assert canary.call("POST", f"{auth}/v1/auth/logout", headers=bearer).status_code == 204
    canary.call("GET", f"{api}/v1/me", headers=bearer)

    # Failed logins: wrong password, unknown email.
    for email, password in ((user.email, wrong), (random_email(), user.password)):
        failed = canary.call(
            "POST",
            f"{auth}/v1/auth/login",
            json={"email": email, "password": password},
            headers=user.headers,
        )
        assert failed.status_code == 401

    # Malformed requests carrying secrets.
    json_headers = {**user.headers, "Content-Type": "application/json"}
    canary.call(
        "POST",
        f"{auth}/v1/auth/login",
        content=f'{{"email": "{user.email}", "password": "{user.password}", "x": '.encode(),
        headers=json_headers,
    )
    canary.call(
        "POST",
        f"{auth}/v1/auth/login",
        json={"email": user.password, "password": access},
        headers=user.headers,
    )
    canary.call(
        "POST",
        f"{auth}/v1/auth/login",
        json={"email": user.email, "password": user.password, "card": card},
        headers=user.headers,
    )
    canary.call(
        "POST",
        f"{auth}/v1/users",
        json={"email": card, "password": ssn, "displayName": user.password},
        headers=user.headers,
    )
    canary.call(
        "POST",
        f"{auth}/v1/auth/login",
        content=(b"\xff\xfe" + user.password.encode("utf-16")),
        headers=json_headers,
    )
    oversized = json.dumps({"email": user.email, "password": user.password, "pad": card * 5000})
    assert (
        canary.call(
            "POST", f"{auth}/v1/auth/login", content=oversized, headers=json_headers
        ).status_code
        == 413
    )
    assert (
        canary.call(
            "POST",
            f"{api}/v1/notes",
            content=oversized,
            headers={**json_headers, "Authorization": f"Bearer {access}"},
        ).status_code
        == 413
    )

    # Tokens and credentials in query strings and headers.
    canary.call("GET", f"{api}/v1/me", params={"access_token": access, "password": user.password})
    canary.call(
        "POST",
        f"{auth}/oauth2/token",
        params={"refresh_token": refresh_token},
        data={"grant_type": "refresh_token"},
    )
    canary.call("GET", f"{api}/v1/me", headers={"Authorization": f"Basic {basic}"})
    canary.call(
        "GET",
        f"{api}/v1/me",
        headers={"Cookie": f"session={refresh_token}; card={card}", "X-Api-Key": access},
    )
    canary.call(
        "GET",
        f"{api}/v1/me",
        headers={
            "Authorization": f"Bearer {access}",
            "User-Agent": f"Canary/1.0 Bearer {access} {card}",
        },
    )
    canary.call(
        "GET",
        f"{api}/v1/notes",
        headers={
            **user.headers,
            "X-Request-ID": refresh_token,
            "X-App-Version": user.password.encode(),
        },
    )

    # Grants Bulwark does not offer (device flow, RFC 8628; code with PKCE, RFC 7636).
    canary.call(
        "POST",
        f"{auth}/oauth2/token",
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": device_code,
            "user_code": user_code,
        },
    )
    canary.call(
        "POST",
        f"{auth}/oauth2/token",
        data={"grant_type": "authorization_code", "code": code, "code_verifier": verifier},
    )
    canary.call(
        "POST",
        f"{auth}/oauth2/revoke",
        data={"token": refresh_token, "token_type_hint": "refresh_token"},
    )


def test_no_secret_of_full_sessions_reaches_any_output(stack_factory: StackFactory) -> None:
    own = stack_factory()
    canary = Canary(own)
    _run_sessions(canary)
    own.stack.stop()  # every byte: shutdown lines included, nothing left in a buffer

    output = {svc: (own.log_dir / f"{svc}.log").read_bytes() for svc in SERVICES}
    for service, data in output.items():
        text = data.decode("utf-8", "replace")
        for secret in canary.secrets:
            for form in _encodings(secret):
                assert form not in text, f"{service} wrote a secret (as {form[:6]}...)"
        lines = [line for line in text.splitlines() if line and not line.startswith("--- ")]
        assert all(isinstance(json.loads(line), dict) for line in lines), service

    # The story really happened and was logged (so the scan above looked at something).
    auth_events = {
        json.loads(line).get("event")
        for line in output["auth"].decode().splitlines()
        if line.startswith("{")
    }
    assert auth_events >= {
        "request",
        "login_failed",
        "login_succeeded",
        "refresh_reuse_detected",
        "logout",
    }
    assert {400, 401, 413}.issubset(canary.statuses)
    assert b'"event":"grpc_call"' in output["ratelimit"]
    assert b"[REDACTED]" in output["api"]  # hostile headers did reach a log line, masked
    assert b"[REDACTED]" in output["auth"]
