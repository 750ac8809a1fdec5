"""Logs: one JSON access line per request (HTTP and gRPC) with the fields an incident
responder needs, security events as log lines, no password, token or Authorization header
anywhere in what any service wrote, and no client value that can start or forge a line.
The schema is docs/logs.md."""

from __future__ import annotations

import json
import re
import secrets
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from .conftest import RunningStack
from .helpers import bearer, login, new_request_id, random_email, refresh, register

pytestmark = pytest.mark.security(stride="R", asvs=("V16.2",))

ACCESS_FIELDS = {
    "request_id",
    "trace_id",
    "span_id",
    "user_id",
    "method",
    "route",
    "status",
    "latency_ms",
    "request_bytes",
    "response_bytes",
    "app_version",
    "platform",
    "device_id",
    "user_agent",
    "client_ip",
}
GRPC_FIELDS = {
    "request_id",
    "method",
    "route",
    "code",
    "latency_ms",
    "request_bytes",
    "response_bytes",
    "peer",
    "client_ip",
    "domain",
}
HEX32, HEX16 = re.compile(r"^[0-9a-f]{32}$"), re.compile(r"^[0-9a-f]{16}$")


def _lines(stack: RunningStack, service: str) -> list[dict[str, Any]]:
    lines = []
    # str.splitlines breaks at every Unicode line boundary (U+2028, NEL, ...), not only \n:
    # a value that could start a line for some reader fails the json.loads below.
    for raw in stack.log(service).splitlines():
        # Every line the service wrote is one JSON object ("--- " lines are the supervisor's).
        if raw.strip() and not raw.startswith("--- "):
            line = json.loads(raw)
            assert isinstance(line, dict), raw
            lines.append(line)
    return lines


def _wait_for(stack: RunningStack, service: str, **fields: object) -> list[dict[str, Any]]:
    """The lines of ``service`` that have all ``fields``, once there is one (at most 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        found = [
            line
            for line in _lines(stack, service)
            if all(line.get(k) == v for k, v in fields.items())
        ]
        if found or time.monotonic() > deadline:
            return found


@pytest.mark.security(stride="I", asvs=("V14.2",))
def test_a_session_leaves_no_secret_in_any_log(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    user.password = "Tripwire-Pass-7731!"  # not "Canary-...": it would contain the email's word
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
    assert line["device_id"] == user.device_id
    assert line["client_ip"] == "127.0.0.1"
    assert line["user_agent"].startswith("python-httpx/")
    assert HEX32.match(line["trace_id"])
    assert HEX16.match(line["span_id"])


def test_the_rate_limit_call_of_a_request_has_its_own_line_with_the_request_id(
    stack: RunningStack,
) -> None:
    user = register(stack.auth_url)
    token = login(stack.auth_url, user)["access_token"]
    request_id = new_request_id("rl")
    response = httpx.get(
        f"{stack.api_url}/v1/me", headers={**bearer(token, user), "X-Request-ID": request_id}
    )
    assert response.status_code == 200
    calls = _wait_for(stack, "ratelimit", event="grpc_call", request_id=request_id)
    assert len(calls) == 1
    call = calls[0]
    assert call.keys() >= GRPC_FIELDS
    assert (
        call["method"]
        == call["route"]
        == ("/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit")
    )
    assert call["code"] == "OK"
    assert call["domain"] == "bulwark-api"
    assert call["request_bytes"] > 0
    assert call["response_bytes"] > 0
    assert call["latency_ms"] >= 0
    assert call["peer"].startswith("ipv4:127.0.0.1:")
    assert call["client_ip"] == "127.0.0.1"
    # The descriptors (client IP, user id; emails at login) are never logged.
    assert user.user_id not in json.dumps(call)


def test_auth_access_lines_name_the_user_of_login_refresh_and_logout(
    stack: RunningStack,
) -> None:
    user = register(stack.auth_url)
    tokens = login(stack.auth_url, user)
    rotated = refresh(stack.auth_url, str(tokens["refresh_token"]), user)
    assert rotated.status_code == 200
    logout = httpx.post(
        f"{stack.auth_url}/v1/auth/logout", headers=bearer(rotated.json()["access_token"], user)
    )
    assert logout.status_code == 204
    lines = _wait_for(stack, "auth", event="request", route="/v1/auth/logout", user_id=user.user_id)
    assert len(lines) == 1
    routes = {
        line["route"]
        for line in _lines(stack, "auth")
        if line.get("event") == "request" and line.get("user_id") == user.user_id
    }
    assert routes == {"/v1/auth/login", "/oauth2/token", "/v1/auth/logout"}


@pytest.mark.security(stride="R", asvs=("V16.3",))
def test_security_events_are_log_lines_with_ip_device_and_email_fingerprint(
    stack: RunningStack,
) -> None:
    user = register(stack.auth_url)
    unknown = random_email()
    for email in (user.email, user.email, unknown):
        response = httpx.post(
            f"{stack.auth_url}/v1/auth/login",
            json={"email": email, "password": "Wrong-Password-1!"},
            headers=user.headers,
        )
        assert response.status_code == 401
    tokens = login(stack.auth_url, user)
    first = str(tokens["refresh_token"])
    assert refresh(stack.auth_url, first, user).status_code == 200
    # A repeat within the grace window is a retry (the same successor comes back); once the
    # successor has been used, the first token is a reuse.
    second = refresh(stack.auth_url, first, user).json()["refresh_token"]
    assert refresh(stack.auth_url, second, user).status_code == 200
    assert refresh(stack.auth_url, first, user).status_code == 400

    reuse = _wait_for(stack, "auth", event="refresh_reuse_detected", user_id=user.user_id)
    assert len(reuse) == 1
    assert reuse[0]["category"] == "security"
    assert reuse[0]["level"] == "warning"
    assert reuse[0]["client_ip"] == "127.0.0.1"
    assert reuse[0]["device_id"] == user.device_id
    assert reuse[0]["family_id"]
    assert HEX32.match(reuse[0]["trace_id"])

    lines = _lines(stack, "auth")
    failed = [
        line
        for line in lines
        if line.get("event") == "login_failed" and line.get("device_id") == user.device_id
    ]
    assert len(failed) == 3
    assert [line["user_id"] for line in failed] == [user.user_id, user.user_id, None]
    fingerprints = [line["email_fingerprint"] for line in failed]
    assert fingerprints[0] == fingerprints[1] != fingerprints[2]
    assert all(HEX16.match(fingerprint) for fingerprint in fingerprints)
    assert all(line["client_ip"] == "127.0.0.1" for line in failed)
    # Each security line belongs to its request: same request id as an access line.
    access_ids = {line["request_id"] for line in lines if line.get("event") == "request"}
    assert {line["request_id"] for line in failed} <= access_ids
    succeeded = [
        line
        for line in lines
        if line.get("event") == "login_succeeded" and line.get("user_id") == user.user_id
    ]
    assert len(succeeded) == 1
    log_text = stack.log("auth")
    assert user.email not in log_text
    assert unknown not in log_text


def _raw_request(url: str, request: bytes) -> bytes:
    """Send ``request`` as is (no client library would send these bytes) and return the
    answer's status line."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as conn:
        conn.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            chunk = conn.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


# A forged line and field, after every byte some reader takes as a line break.
FORGED = b'{"level":"critical","event":"forged","forged":true}'
BREAKERS = [b"\r", b"\n", b"\x00", b"\x0b", b"\x0c", b"\x1c", b"\x1e", b"\x85", b"\x7f"]
UNICODE_BREAKERS = ["\u2028", "\u2029", "\u0085", "\u202e"]


@pytest.mark.security(stride="T", asvs=("V16.4", "V1.2"))
def test_control_characters_in_client_values_cannot_start_or_forge_a_line(
    stack: RunningStack,
) -> None:
    user = register(stack.auth_url)
    token = login(stack.auth_url, user)["access_token"]
    marker = "inject-" + secrets.token_hex(4)
    host = urlsplit(stack.api_url).netloc.encode()
    statuses = []
    for breaker in [*BREAKERS, "\u2028".encode(), "\u2029".encode()]:
        hostile = marker.encode() + breaker + FORGED
        headers = b"".join(
            name + b": " + hostile + b"\r\n"
            for name in (b"User-Agent", b"X-Request-ID", b"X-App-Version", b"X-Platform")
        )
        statuses.append(
            _raw_request(
                stack.api_url,
                b"GET /v1/notes/%0d%0a" + FORGED.replace(b'"', b"%22") + b" HTTP/1.1\r\n"
                b"Host: " + host + b"\r\n"
                b"Authorization: Bearer " + str(token).encode() + b"\r\n"
                b"X-Device-Id: " + hostile + b"\r\n" + headers + b"Connection: close\r\n\r\n",
            )
        )
    # JSON bodies: email and device name (escaped by the client, unescaped by the server).
    for breaker in [*(b.decode("latin-1") for b in BREAKERS), *UNICODE_BREAKERS]:
        hostile_text = marker + breaker + FORGED.decode()
        response = httpx.post(
            f"{stack.auth_url}/v1/auth/login",
            json={"email": hostile_text, "password": hostile_text, "device": hostile_text},
            headers={"User-Agent": marker},
        )
        assert response.status_code in {400, 401}
    assert all(status.startswith(b"HTTP/1.1 ") for status in statuses), statuses

    for service in ("api", "auth", "ratelimit"):
        lines = _lines(stack, service)  # every line parses as one JSON object
        assert not [line for line in lines if "forged" in line or line.get("event") == "forged"]
        assert not [line for line in lines if line.get("level") == "critical"]
    logged = [
        line
        for line in _lines(stack, "api")
        if line.get("event") == "request" and str(line.get("user_agent", "")).startswith(marker)
    ]
    # Requests the HTTP parser accepted were logged, hostile values kept but escaped.
    assert logged
    hostile_agents = [line["user_agent"] for line in logged if line["user_agent"] != marker]
    assert any("\x85" in agent or "\u2028" in agent for agent in hostile_agents)
    for line in logged:
        assert line["device_id"] == "invalid"
        assert line["app_version"] in {None, "invalid"}
        assert line["platform"] in {None, "invalid"}
        assert line["request_id"] != line["user_agent"]  # a malformed X-Request-ID is replaced
