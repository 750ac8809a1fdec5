"""A scripted mobile client: one session against a running stack, each step checked.

Prints one line per step (method, path, HTTP status, expected or not). Tokens are never
printed. ``run_demo`` returns the number of steps that did not go as expected.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import httpx

PASSWORD = "Correct-Horse-9!"  # noqa: S105 - the demo account's password, by design


@dataclass
class _Step:
    label: str
    expected: int
    check: Callable[[httpx.Response], str | None] | None = None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _has_tokens(response: httpx.Response) -> str | None:
    body = _json(response)
    missing = [k for k in ("access_token", "refresh_token") if not body.get(k)]
    return f"missing {', '.join(missing)}" if missing else None


def _invalid_grant(response: httpx.Response) -> str | None:
    error = _json(response).get("error")
    return None if error == "invalid_grant" else f"error is {error!r}, not 'invalid_grant'"


class Demo:
    """One mobile session: device headers on every call, results collected per step."""

    def __init__(self, api_url: str, auth_url: str, out: IO[str], timeout: float = 10.0) -> None:
        self.out = out
        headers = {"X-App-Version": "1.0.0", "X-Platform": "ios", "X-Device-Id": str(uuid.uuid4())}
        self.auth = httpx.Client(base_url=auth_url, headers=headers, timeout=timeout)
        self.api = httpx.Client(base_url=api_url, headers=headers, timeout=timeout)
        self.failures = 0
        self.step_no = 0

    def close(self) -> None:
        """Close both HTTP clients."""
        self.auth.close()
        self.api.close()

    def call(
        self, step: _Step, client: httpx.Client, method: str, path: str, **kwargs: Any
    ) -> httpx.Response | None:
        """Send one request, compare its status (and ``step.check``) with what is expected,
        print the outcome; return the response, or None if the request itself failed."""
        self.step_no += 1
        where = f"{method} {path}"
        try:
            response = client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self.failures += 1
            name = type(exc).__name__
            self.out.write(f"{self.step_no:>2}. {step.label:<38} {where:<24} ---  FAIL ({name})\n")
            return None
        problem = None
        if response.status_code != step.expected:
            problem = f"expected {step.expected}"
        elif step.check is not None:
            problem = step.check(response)
        if problem:
            self.failures += 1
        verdict = "ok" if problem is None else f"FAIL ({problem})"
        self.out.write(
            f"{self.step_no:>2}. {step.label:<38} {where:<24} {response.status_code}  {verdict}\n"
        )
        self.out.flush()
        return response


def run_demo(api_url: str, auth_url: str, out: IO[str]) -> int:
    """Play the session against ``api_url`` and ``auth_url``; return the number of failed steps."""
    demo = Demo(api_url, auth_url, out)
    email = f"demo-{secrets.token_hex(4)}@example.com"
    try:
        return _play(demo, email)
    finally:
        demo.close()


def _bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.get('access_token', '')}"}


def _play(demo: Demo, email: str) -> int:
    auth, api = demo.auth, demo.api
    out = demo.out
    out.write(f"demo user {email}, device {auth.headers['X-Device-Id']}\n")
    demo.call(
        _Step("register", 201),
        auth,
        "POST",
        "/v1/users",
        json={"email": email, "password": PASSWORD, "displayName": "Demo User"},
    )
    login = demo.call(
        _Step("login", 200, _has_tokens),
        auth,
        "POST",
        "/v1/auth/login",
        json={"email": email, "password": PASSWORD},
    )
    tokens = _json(login) if login is not None else {}
    if not tokens.get("access_token"):
        out.write("no access token: the remaining steps cannot run\n")
        return demo.failures + 1

    demo.call(_Step("who am I", 200), api, "GET", "/v1/me", headers=_bearer(tokens))
    title = f"Demo note {secrets.token_hex(3)}"
    demo.call(
        _Step("create a note", 201),
        api,
        "POST",
        "/v1/notes",
        headers=_bearer(tokens),
        json={"title": title, "body": "Written by bulwark-dev demo."},
    )

    def lists_note(response: httpx.Response) -> str | None:
        return None if title in response.text else "the new note is not listed"

    demo.call(
        _Step("list notes", 200, lists_note), api, "GET", "/v1/notes", headers=_bearer(tokens)
    )

    first_refresh = str(tokens.get("refresh_token", ""))
    refreshed = demo.call(
        _Step("refresh", 200, _has_tokens),
        auth,
        "POST",
        "/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": first_refresh},
    )
    newer = _json(refreshed) if refreshed is not None else {}
    # A repeat of the token just used is a benign retry (the grace window); an older one is not.
    again_refreshed = demo.call(
        _Step("refresh again", 200, _has_tokens),
        auth,
        "POST",
        "/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": str(newer.get("refresh_token", ""))},
    )
    newer = _json(again_refreshed) if again_refreshed is not None else {}
    demo.call(
        _Step("replay the first refresh token", 400, _invalid_grant),
        auth,
        "POST",
        "/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": first_refresh},
    )
    demo.call(
        _Step("newest refresh token (family revoked)", 400, _invalid_grant),
        auth,
        "POST",
        "/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": str(newer.get("refresh_token", ""))},
    )
    demo.call(
        _Step("its access token at the API", 401),
        api,
        "GET",
        "/v1/me",
        headers=_bearer(newer),
    )

    again = demo.call(
        _Step("login again", 200, _has_tokens),
        auth,
        "POST",
        "/v1/auth/login",
        json={"email": email, "password": PASSWORD},
    )
    demo.call(
        _Step("logout", 204),
        auth,
        "POST",
        "/v1/auth/logout",
        headers=_bearer(_json(again) if again is not None else {}),
    )
    demo.call(
        _Step("the API after logout", 401),
        api,
        "GET",
        "/v1/me",
        headers=_bearer(_json(again) if again is not None else {}),
    )
    return demo.failures
