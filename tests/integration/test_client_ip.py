"""The client address behind a trusted proxy (``TRUSTED_PROXIES``): the right-most untrusted
``X-Forwarded-For`` hop is the client's bucket, the session's last IP and the logged address;
what a client writes into the header itself changes none of them.

The test plays the ingress: its connections come from 127.0.0.1 (trusted), and it appends
the client's address as the right-most entry, as a proxy does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from .conftest import RunningStack, StackFactory
from .helpers import bearer, random_email, register

pytestmark = pytest.mark.security(stride="S", asvs=("V4.1", "V2.4"))

CLIENT = "203.0.113.7"
PER_IP_LOGINS = 3
# The packaged auth limits, with the per-IP login limit low enough to reach in a few calls.
RULES = f"""
domains:
  - domain: bulwark-auth
    descriptors:
      - key: endpoint
        value: login
        descriptors:
          - key: email
            rate_limit: {{requests: 5, window_seconds: 900}}
          - key: remote_address
            rate_limit: {{requests: {PER_IP_LOGINS}, window_seconds: 900}}
      - key: endpoint
        value: register
        descriptors:
          - key: remote_address
            rate_limit: {{requests: 300, window_seconds: 3600}}
      - key: endpoint
        value: token
        descriptors:
          - key: remote_address
            rate_limit: {{requests: 1200, window_seconds: 900}}
"""


def _login(stack: RunningStack, email: str, forwarded_for: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{stack.auth_url}/v1/auth/login",
        json={"email": email, "password": password},
        headers={"X-Forwarded-For": forwarded_for},
    )


def _logged_ips(log: str) -> list[str]:
    return [
        entry["client_ip"]
        for line in log.splitlines()
        if line.startswith("{")
        and (entry := json.loads(line)).get("event") == "request"
        and entry.get("route") == "/v1/auth/login"
    ]


def _new_logged_ips(read_log: Callable[[], str], before: int, count: int) -> list[str]:
    """The client IPs of the ``count`` login access lines after the first ``before``, waiting
    (up to 5 s) for the services' log pumps to write them."""
    deadline = time.monotonic() + 5
    while len(ips := _logged_ips(read_log())) < before + count and time.monotonic() < deadline:
        time.sleep(0.05)
    return ips[before:]


def test_spoofed_forwarded_for_cannot_escape_the_per_ip_login_limit(
    stack_factory: StackFactory, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    own = stack_factory(
        services=["ratelimit", "auth"],
        env={
            "ratelimit": {"RATELIMIT_RULES": str(rules)},
            "auth": {"TRUSTED_PROXIES": "127.0.0.1"},
        },
    )
    # Whatever the client puts left of its own address, every attempt is counted for CLIENT.
    spoofs = ["", "6.6.6.6, ", "10.0.0.1, 198.51.100.1, ", "garbage, ", "127.0.0.1, "]
    statuses = [
        _login(own, random_email(), f"{spoof}{CLIENT}", "Wrong-Password-1!").status_code
        for spoof in spoofs
    ]
    assert statuses == [401] * PER_IP_LOGINS + [429] * (len(spoofs) - PER_IP_LOGINS)

    # Distinct addresses appended by the trusted proxy are distinct clients with own buckets,
    # even when they claim to be the blocked one.
    before = len(_logged_ips(own.log("auth")))
    for other in ("198.51.100.1", "198.51.100.2", "2001:db8::7"):
        response = _login(own, random_email(), f"{CLIENT}, {other}", "Wrong-Password-1!")
        assert response.status_code == 401, other
        assert "r=2" in response.headers["RateLimit"]  # its own per-IP bucket, one hit in
    assert _new_logged_ips(lambda: own.log("auth"), before, 3) == [
        "198.51.100.1",
        "198.51.100.2",
        "2001:db8::7",
    ]

    # The session records the resolved address too.
    user = register(own.auth_url)
    forwarded = "6.6.6.6, 198.51.100.9"
    ok = _login(own, user.email, forwarded, user.password)
    assert ok.status_code == 200, ok.text
    sessions = httpx.get(
        f"{own.auth_url}/v1/auth/sessions", headers=bearer(ok.json()["access_token"])
    )
    assert [s["lastIp"] for s in sessions.json()["sessions"]] == ["198.51.100.9"]


def test_without_trusted_proxies_the_forwarded_for_header_is_ignored(
    stack: RunningStack,
) -> None:
    email = random_email()
    before = len(_logged_ips(stack.log("auth")))
    for spoof in ("198.51.100.50", "198.51.100.51"):
        assert _login(stack, email, spoof, "Wrong-Password-1!").status_code == 401
    assert _new_logged_ips(lambda: stack.log("auth"), before, 2) == ["127.0.0.1", "127.0.0.1"]
