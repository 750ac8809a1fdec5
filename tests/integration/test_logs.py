"""Logs: one JSON access line per request with the fields an incident responder needs, and
no password, token or Authorization header anywhere in what any service wrote."""

from __future__ import annotations

import json
import time

import httpx

from .conftest import RunningStack
from .helpers import bearer, login, refresh, register

ACCESS_FIELDS = {
    "request_id",
    "user_id",
    "method",
    "route",
    "status",
    "latency_ms",
    "request_bytes",
    "response_bytes",
    "app_version",
    "platform",
}


def _lines(stack: RunningStack, service: str) -> list[dict[str, object]]:
    lines = []
    for raw in stack.log(service).splitlines():
        # Every line the service wrote is one JSON object ("--- " lines are the supervisor's).
        if raw.strip() and not raw.startswith("--- "):
            lines.append(json.loads(raw))
    return lines


def test_a_session_leaves_no_secret_in_any_log(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    user.password = "Canary-Pass-7731!"
    httpx.post(  # a second account whose password is the canary
        f"{stack.auth_url}/v1/users",
        json={"email": "canary-" + user.email, "password": user.password, "displayName": "C"},
    )
    user.email = "canary-" + user.email
    tokens = login(stack.auth_url, user)
    secrets = {user.password, str(tokens["access_token"]), str(tokens["refresh_token"])}
    httpx.get(f"{stack.api_url}/v1/me", headers=bearer(tokens["access_token"], user))
    rotated = refresh(stack.auth_url, str(tokens["refresh_token"]), user).json()
    secrets |= {rotated["access_token"], rotated["refresh_token"]}
    refresh(stack.auth_url, str(tokens["refresh_token"]), user)  # a retry within the grace window
    httpx.post(  # a failed login and a malformed body carrying secrets
        f"{stack.auth_url}/v1/auth/login",
        json={"email": user.email, "password": "Wrong-" + user.password},
    )
    httpx.post(
        f"{stack.auth_url}/v1/auth/login",
        content=f'{{"email": "{user.email}", "password": "{user.password}", "x": '.encode(),
        headers={"Content-Type": "application/json"},
    )
    httpx.get(f"{stack.api_url}/v1/me", params={"access_token": tokens["access_token"]})
    httpx.get(f"{stack.api_url}/v1/me", headers={"Authorization": "Bearer " + "e30." * 3})
    time.sleep(0.5)  # let the log pumps flush
    for service in ("auth", "api", "ratelimit"):
        text = stack.log(service)
        assert text, service
        for secret in secrets | {"Wrong-" + user.password}:
            assert secret not in text, f"{service} logged a secret"
        assert "Bearer e30" not in text


def test_every_request_has_one_access_line_with_the_standard_fields(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    token = login(stack.auth_url, user)["access_token"]
    request_id = "trace-me-" + user.user_id[:8]
    response = httpx.get(
        f"{stack.api_url}/v1/notes", headers={**bearer(token, user), "X-Request-ID": request_id}
    )
    assert response.status_code == 200
    time.sleep(0.3)
    matching = [
        line
        for line in _lines(stack, "api")
        if line.get("request_id") == request_id and line.get("event") == "request"
    ]
    assert len(matching) == 1
    line = matching[0]
    assert line.keys() >= ACCESS_FIELDS
    assert line["user_id"] == user.user_id
    assert line["route"] == "/v1/notes"
    assert line["status"] == 200
    assert line["app_version"] == "1.4.2"
    assert line["platform"] == "ios"
