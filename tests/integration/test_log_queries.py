"""The query library of docs/queries.md, run as written (its ``jq`` one-liners, through bash
and the real ``jq``) against the logs of a stack that made the events happen: each finds the
expected lines and none of the others."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bulwark.auth.settings import DEVELOPMENT_EMAIL_FINGERPRINT_KEY

from .conftest import RunningStack, StackFactory
from .helpers import MobileUser, new_request_id, random_email

QUERIES = Path(__file__).parents[2] / "docs" / "queries.md"
_BLOCK = re.compile(r"<!-- query: ([a-z-]+) -->\s*```sh\n(.+?)\n```", re.DOTALL)
IP_A, IP_B, IP_C = "203.0.113.10", "198.51.100.20", "198.51.100.30"


def _queries() -> dict[str, str]:
    found = dict(_BLOCK.findall(QUERIES.read_text()))
    assert found, "no <!-- query: NAME --> blocks in docs/queries.md"
    return found


def _now() -> str:
    """Now, as the services write ``ts``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Client:
    """Calls as a mobile app behind the trusted proxy (its address in X-Forwarded-For)."""

    def __init__(self, stack: RunningStack, ip: str, user: MobileUser | None = None) -> None:
        self.stack, self.ip, self.user = stack, ip, user
        self.access = self.refresh_token = ""

    def headers(self, **extra: str) -> dict[str, str]:
        headers = {"X-Forwarded-For": self.ip, **(self.user.headers if self.user else {})}
        if self.access:
            headers["Authorization"] = f"Bearer {self.access}"
        return {**headers, **extra}

    def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = self.headers(**kwargs.pop("headers", {}))
        return httpx.request(method, url, headers=headers, timeout=10, **kwargs)

    def register_and_login(self) -> str:
        assert self.user is not None
        body = {"email": self.user.email, "password": self.user.password, "displayName": "Q"}
        registered = self.call("POST", f"{self.stack.auth_url}/v1/users", json=body)
        assert registered.status_code == 201, registered.text
        self.user.user_id = registered.json()["id"]
        self.login(self.user.email, self.user.password, expect=200)
        return self.user.user_id

    def login(self, email: str, password: str, expect: int) -> None:
        response = self.call(
            "POST",
            f"{self.stack.auth_url}/v1/auth/login",
            json={"email": email, "password": password},
        )
        assert response.status_code == expect, response.text
        if expect == 200:
            self.access, self.refresh_token = (
                response.json()["access_token"],
                response.json()["refresh_token"],
            )

    def refresh(self, token: str) -> httpx.Response:
        return self.call(
            "POST",
            f"{self.stack.auth_url}/oauth2/token",
            data={"grant_type": "refresh_token", "refresh_token": token},
        )


@pytest.fixture(scope="module")
def jq() -> str:
    path = shutil.which("jq")
    if path is None:
        pytest.fail(
            "jq is not installed: docs/queries.md's one-liners need it "
            "(Debian package jq: apt-get install -y jq)"
        )
    return path


@pytest.fixture(scope="module")
def incident(stack_factory: StackFactory) -> dict[str, Any]:
    """A stack behind a trusted proxy, and what happened on it."""
    proxy = {"TRUSTED_PROXIES": "127.0.0.1"}
    stack = stack_factory(env={"auth": proxy, "api": proxy})
    alice = Client(stack, IP_A, MobileUser(email=random_email()))
    bob = Client(stack, IP_A, MobileUser(email=random_email()))
    facts: dict[str, Any] = {"stack": stack, "alice": alice.register_and_login()}
    facts["bob"] = bob.register_and_login()
    api = stack.api_url
    for path in ("/v1/me", "/v1/notes"):
        assert alice.call("GET", api + path).status_code == 200
    assert bob.call("GET", api + "/v1/me").status_code == 200

    # 4xx before, inside and after a window; their request ids tell them apart.
    def client_error(label: str, method: str, url: str, client: Client, **kwargs: Any) -> str:
        request_id = new_request_id(label)
        response = client.call(method, url, headers={"X-Request-ID": request_id}, **kwargs)
        assert 400 <= response.status_code < 500, response.text
        # The access line (and its ts) is written just after the answer: wait for it, or the
        # window's bounds, read from the clock here, could fall before it.
        give_up = time.monotonic() + 5
        while request_id not in (stack.log_dir / "api.log").read_text():
            assert time.monotonic() < give_up, f"no access line for {request_id}"
            time.sleep(0.02)
        return request_id

    anonymous = Client(stack, IP_C)
    client_error("before", "GET", api + "/v1/me", anonymous)
    facts["from"] = _now()
    facts["window"] = {
        client_error("in", "GET", f"{api}/v1/notes/{uuid.uuid4()}", alice),
        client_error("in", "GET", api + "/v1/me", anonymous),
        client_error("in", "POST", api + "/v1/notes", alice, json={"nope": 1}),
    }
    assert alice.call("GET", api + "/v1/notes").status_code == 200  # a 2xx in the window
    facts["to"] = _now()
    client_error("after", "GET", api + "/v1/me", anonymous)

    # Failed logins: IP_B tries three unknown emails and alice's with a wrong password;
    # IP_C tries one of the same unknown emails.
    unknown = [random_email() for _ in range(3)]
    stuffer, other = Client(stack, IP_B), Client(stack, IP_C)
    for email in [*unknown, alice.user.email]:  # type: ignore[union-attr]
        stuffer.login(email, "Wrong-Password-1!", expect=401)
    other.login(unknown[0], "Wrong-Password-1!", expect=401)
    facts["unknown"] = unknown

    # Refresh reuse by alice's token (rotate, rotate again, replay the first); bob rotates once.
    first = alice.refresh_token
    second = alice.refresh(first).json()["refresh_token"]
    assert alice.refresh(second).status_code == 200
    assert alice.refresh(first).status_code == 400
    assert bob.refresh(bob.refresh_token).status_code == 200
    stack.log("auth")  # wait until the logs stop growing
    stack.log("api")
    return facts


def _run_text(query: str, stack: RunningStack, **variables: str) -> list[str]:
    """Run one documented one-liner with bash, as a reader would; its output lines."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LOGS": str(stack.log_dir)}
    env.update(variables)
    done = subprocess.run(  # noqa: S603 - the documented command, run as a reader would
        ["/bin/bash", "-o", "pipefail", "-c", query],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def _run(query: str, stack: RunningStack, **variables: str) -> list[Any]:
    """`_run_text`, each line parsed as JSON."""
    return [json.loads(line) for line in _run_text(query, stack, **variables)]


def _log_lines(stack: RunningStack) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for service in ("auth", "api", "ratelimit")
        for line in (stack.log_dir / f"{service}.log").read_text().splitlines()
        if line.startswith("{")
    ]


def test_every_block_of_the_library_is_a_jq_or_shell_one_liner(jq: str) -> None:
    queries = _queries()
    assert set(queries) >= {
        "user-requests",
        "user-activity",
        "client-errors",
        "slow-endpoints",
        "slow-requests",
        "failed-logins-by-ip",
        "failed-logins-from-ip",
        "email-fingerprint",
        "refresh-reuse",
    }
    for name, query in queries.items():
        assert "\n" not in query, name
        assert query.startswith(("jq ", "printf ")), name
    assert jq


@pytest.mark.security(stride="R", asvs=("V16.2",))
def test_every_request_by_one_user(jq: str, incident: dict[str, Any]) -> None:
    assert jq
    stack, alice = incident["stack"], incident["alice"]
    found = _run(_queries()["user-requests"], stack, USER_ID=alice)
    assert found
    assert {line["user_id"] for line in found} == {alice}
    assert {line["event"] for line in found} == {"request"}
    routes = {(line["service"], line["route"]) for line in found}
    assert routes >= {
        ("auth", "/v1/auth/login"),
        ("auth", "/oauth2/token"),
        ("api", "/v1/me"),
        ("api", "/v1/notes"),
    }
    expected = [
        line
        for line in _log_lines(stack)
        if line.get("event") == "request" and line.get("user_id") == alice
    ]
    assert len(found) == len(expected)

    activity = _run(_queries()["user-activity"], stack, USER_ID=alice)
    events = {line["event"] for line in activity}
    assert events >= {"request", "login_succeeded", "login_failed", "refresh_reuse_detected"}
    assert {line["user_id"] for line in activity} == {alice}


def test_all_4xx_in_a_time_window(jq: str, incident: dict[str, Any]) -> None:
    assert jq
    found = _run(
        _queries()["client-errors"], incident["stack"], FROM=incident["from"], TO=incident["to"]
    )
    assert {line["request_id"] for line in found} == incident["window"]
    assert all(400 <= line["status"] < 500 for line in found)


def test_endpoints_above_a_latency_threshold(jq: str, incident: dict[str, Any]) -> None:
    assert jq
    stack = incident["stack"]
    by_route: dict[tuple[str, str], list[float]] = {}
    for line in _log_lines(stack):
        if line.get("event") in {"request", "grpc_call"}:
            by_route.setdefault((line["service"], line["route"]), []).append(line["latency_ms"])
    p95 = {
        key: sorted(values)[math.ceil(len(values) * 0.95) - 1] for key, values in by_route.items()
    }
    # A threshold with endpoints on both sides of it.
    threshold = sorted(p95.values())[len(p95) // 2]
    found = _run(_queries()["slow-endpoints"], stack, MS=str(threshold))
    expected = {key for key, value in p95.items() if value > threshold}
    assert expected
    assert expected != set(p95)
    assert {(line["service"], line["route"]) for line in found} == expected
    assert [line["p95_ms"] for line in found] == sorted(
        (p95[key] for key in expected), reverse=True
    )

    slow = _run(_queries()["slow-requests"], stack, MS=str(threshold))
    assert slow
    assert all(line["latency_ms"] > threshold for line in slow)


@pytest.mark.security(stride="R", asvs=("V16.3",))
def test_failed_logins_by_ip_and_the_emails_each_tried(jq: str, incident: dict[str, Any]) -> None:
    assert jq
    stack, alice, unknown = incident["stack"], incident["alice"], incident["unknown"]
    fingerprint_of = {
        email: _run_text(
            _queries()["email-fingerprint"],
            stack,
            EMAIL=email,
            EMAIL_FINGERPRINT_KEY=DEVELOPMENT_EMAIL_FINGERPRINT_KEY,
        )[0]
        for email in unknown
    }
    by_ip = {line["client_ip"]: line for line in _run(_queries()["failed-logins-by-ip"], stack)}
    assert set(by_ip) == {IP_B, IP_C}
    assert by_ip[IP_B]["failures"] == 4
    assert len(by_ip[IP_B]["email_fingerprints"]) == 4
    assert by_ip[IP_B]["accounts"] == [alice]
    assert by_ip[IP_C]["failures"] == 1
    assert by_ip[IP_C]["accounts"] == []
    # The documented fingerprint command finds which emails each IP tried.
    assert by_ip[IP_C]["email_fingerprints"] == [fingerprint_of[unknown[0]]]
    assert set(fingerprint_of.values()) <= set(by_ip[IP_B]["email_fingerprints"])

    attempts = _run(_queries()["failed-logins-from-ip"], stack, IP=IP_C)
    assert [line["email_fingerprint"] for line in attempts] == by_ip[IP_C]["email_fingerprints"]


@pytest.mark.security(stride="R", asvs=("V16.3",))
def test_refresh_reuse_events(jq: str, incident: dict[str, Any]) -> None:
    assert jq
    found = _run(_queries()["refresh-reuse"], incident["stack"])
    assert len(found) == 1
    assert found[0]["user_id"] == incident["alice"]
    assert found[0]["client_ip"] == IP_A
    assert found[0]["family_id"]
