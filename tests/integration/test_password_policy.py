"""The password policy against real servers: the breached-password check over HTTP to a real
stand-in for Have I Been Pwned's range API (a threaded ``http.server`` on 127.0.0.1), and
registration on a running auth service (docs/passwords.md)."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
import structlog

from bulwark.auth.users.breached_passwords import PwnedPasswordsRange
from bulwark.auth.users.password_policy import (
    BREACHED,
    COMMON,
    PasswordCheckUnavailable,
    PasswordPolicy,
    UnreachableAnswer,
)
from bulwark.common.problems import ValidationFailed

from .conftest import RunningStack, StackFactory
from .helpers import PASSWORD, assert_problem, random_email

EMAIL = "river.song@example.com"
NAME = "River"
#: A password every offline rule accepts; the stand-in lists it (or not) as breached.
LEAKED = "Umbrella-Quartz-58!"
DIGEST = hashlib.sha1(LEAKED.encode(), usedforsecurity=False).hexdigest().upper()
PREFIX, SUFFIX = DIGEST[:5], DIGEST[5:]
#: The check's deadline in these tests, and the most any one of them may take past it.
TIMEOUT = 0.5
SLACK = 1.5
#: How long a stalling stand-in holds a request (released at teardown): far past `TIMEOUT`.
STALL = 30.0


def _padding(count: int) -> list[str]:
    """``count`` lines of padding in the API's shape: other suffixes with a count of 0."""
    return [
        f"{hashlib.sha1(str(n).encode(), usedforsecurity=False).hexdigest().upper()[5:]}:0"
        for n in range(count)
    ]


@dataclass
class RangeServer:
    """A stand-in for the range API on 127.0.0.1 (random port), in a thread.

    ``body`` is the answer to every prefix; ``mode``: ``answer``, ``stall`` (say nothing),
    ``trickle`` (send the head, then a byte every 0.2 s) or ``status`` (a 500). Every request
    is recorded with its raw head, so a test can show what never left the process.
    """

    body: str = ""
    mode: str = "answer"
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, raw head)
    released: threading.Event = field(default_factory=threading.Event)
    _server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/range/"

    def start(self) -> RangeServer:
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's name
                stand_in.requests.append((self.path, f"{self.requestline}\r\n{self.headers}"))
                if stand_in.mode == "stall":
                    stand_in.released.wait(STALL)
                    return
                if stand_in.mode == "status":
                    self.send_error(500)
                    return
                payload = stand_in.body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if stand_in.mode == "trickle":
                    for byte in payload:
                        if stand_in.released.wait(0.2):
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    return
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test asserts on `requests`."""

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def range_server() -> Iterator[RangeServer]:
    server = RangeServer().start()
    yield server
    server.stop()


def _policy(server: RangeServer, unreachable: UnreachableAnswer = "allow") -> PasswordPolicy:
    return PasswordPolicy(
        "brief",
        breached=PwnedPasswordsRange(server.url, timeout_seconds=TIMEOUT),
        unreachable=unreachable,
    )


async def _problems(policy: PasswordPolicy, password: str = LEAKED) -> list[str]:
    try:
        return await policy.problems(password, email=EMAIL, display_name=NAME)
    finally:
        await policy.aclose()


def _assert_only_the_prefix_left(server: RangeServer) -> None:
    assert server.requests, "the stand-in was never asked"
    for path, head in server.requests:
        assert path == f"/range/{PREFIX}"
        assert "add-padding: true" in head.lower()
        for secret in (SUFFIX, DIGEST, LEAKED, DIGEST.lower()[5:]):
            assert secret not in head, secret


# --- the range API: what is sent, what is read ---------------------------------------------


async def test_a_breached_password_is_refused_and_only_the_prefix_is_sent(
    range_server: RangeServer,
) -> None:
    range_server.body = "\r\n".join([*_padding(400), f"{SUFFIX}:52", *_padding(400)])
    assert await _problems(_policy(range_server)) == [BREACHED]
    _assert_only_the_prefix_left(range_server)
    assert len(range_server.requests) == 1


async def test_padding_entries_with_a_count_of_0_are_ignored(range_server: RangeServer) -> None:
    range_server.body = "\r\n".join([*_padding(800), f"{SUFFIX}:0"])
    assert await _problems(_policy(range_server)) == []
    _assert_only_the_prefix_left(range_server)


async def test_a_password_the_api_does_not_list_is_accepted(range_server: RangeServer) -> None:
    range_server.body = "\r\n".join(_padding(900))
    assert await _problems(_policy(range_server)) == []


async def test_the_api_is_not_asked_about_a_password_already_refused(
    range_server: RangeServer,
) -> None:
    range_server.body = "\r\n".join(_padding(10))
    assert await _problems(_policy(range_server), "P@ssw0rd2024!") == [COMMON]
    assert range_server.requests == []


async def test_check_refuses_on_the_field_it_is_given(range_server: RangeServer) -> None:
    range_server.body = f"{SUFFIX}:3"
    policy = _policy(range_server)
    try:
        with pytest.raises(ValidationFailed) as failed:
            await policy.check(LEAKED, email=EMAIL, display_name=NAME, field="newPassword")
    finally:
        await policy.aclose()
    assert [(e.field, e.message) for e in failed.value.errors] == [("newPassword", BREACHED)]


# --- the range API unreachable -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["stall", "trickle", "status", "malformed", "closed"])
async def test_without_an_answer_allow_accepts_and_logs_without_the_password(
    range_server: RangeServer, mode: str
) -> None:
    range_server.mode = "answer" if mode == "malformed" else mode
    range_server.body = "<html>not a range</html>" if mode == "malformed" else f"{SUFFIX}:9"
    if mode == "closed":
        range_server.stop()  # nothing listens on the port any more
    started = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        assert await _problems(_policy(range_server, "allow")) == []
    assert time.monotonic() - started < TIMEOUT + SLACK
    warnings = [e for e in logs if e["event"] == "breached_password_check_unavailable"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["answer"] == "allow"
    for entry in logs:
        for secret in (LEAKED, DIGEST, SUFFIX):
            assert secret not in repr(entry)


@pytest.mark.parametrize("mode", ["stall", "trickle"])
async def test_without_an_answer_deny_is_a_503_within_the_deadline(
    range_server: RangeServer, mode: str
) -> None:
    range_server.mode = mode
    range_server.body = "\r\n".join(_padding(50))
    started = time.monotonic()
    with (
        structlog.testing.capture_logs() as logs,
        pytest.raises(PasswordCheckUnavailable) as raised,
    ):
        await _problems(_policy(range_server, "deny"))
    assert time.monotonic() - started < TIMEOUT + SLACK
    assert raised.value.status == 503
    assert int(raised.value.headers["Retry-After"]) > 0
    assert LEAKED not in raised.value.detail
    assert [e["answer"] for e in logs if e["event"] == "breached_password_check_unavailable"] == [
        "deny"
    ]


# --- registration on a running auth service ------------------------------------------------


def _register(url: str, password: str, email: str | None = None) -> httpx.Response:
    body = {"email": email or random_email(), "password": password, "displayName": "Amy Pond"}
    return httpx.post(f"{url}/v1/users", json=body, timeout=10)


@pytest.mark.parametrize("password", ["P@ssw0rd2024!", "Qwerty123456!", "Amy-Pond-2024!!"])
def test_registration_refuses_a_common_or_context_password_without_echoing_it(
    stack: RunningStack, password: str
) -> None:
    email = random_email()
    refused = _register(stack.auth_url, password, email)
    body = assert_problem(refused, 400)
    errors = body["errors"]
    assert isinstance(errors, list)
    assert {e["field"] for e in errors} == {"password"}
    expected = (
        COMMON if password != "Amy-Pond-2024!!" else "must not contain a word of the display name"
    )
    assert expected in {e["message"] for e in errors}
    assert password not in refused.text
    assert password.lower() not in refused.text.lower()
    # Nothing was created: the address is still free.
    assert _register(stack.auth_url, PASSWORD, email).status_code == 201


@pytest.fixture(scope="module")
def stalled_range() -> Iterator[RangeServer]:
    server = RangeServer(mode="stall").start()
    yield server
    server.stop()


def _stack_with_breach_check(
    factory: StackFactory, range_url: str, unreachable: str
) -> RunningStack:
    return factory(
        services=("ratelimit", "auth"),
        env={
            "auth": {
                "BREACHED_PASSWORD_CHECK": "hibp",
                "HIBP_RANGE_URL": range_url,
                "HIBP_TIMEOUT_SECONDS": str(TIMEOUT),
                "BREACHED_PASSWORD_UNREACHABLE": unreachable,
            }
        },
    )


@pytest.mark.resilience  # a stack of its own with the range API stalled
def test_registration_with_the_range_api_stalled_deny_is_503_and_creates_nothing(
    stack_factory: StackFactory, stalled_range: RangeServer
) -> None:
    running = _stack_with_breach_check(stack_factory, stalled_range.url, "deny")
    email = random_email()
    started = time.monotonic()
    refused = _register(running.auth_url, LEAKED, email)
    assert time.monotonic() - started < TIMEOUT + SLACK + 1
    body = assert_problem(refused, 503)
    assert int(refused.headers["Retry-After"]) > 0
    assert LEAKED not in refused.text
    assert body["detail"] == "Passwords cannot be checked right now; retry shortly."
    assert stalled_range.requests
    log = running.log("auth")
    assert '"breached_password_check_unavailable"' in log
    assert LEAKED not in log
    assert SUFFIX not in log
    assert asyncio.run(_users_with(running.databases["auth"], email)) == 0


async def _users_with(database_url: str, email: str) -> int:
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM users WHERE email = $1", email)
    finally:
        await conn.close(timeout=5)
    return count


@pytest.mark.resilience  # a stack of its own with the range API stalled
def test_registration_with_the_range_api_stalled_allow_accepts_and_logs(
    stack_factory: StackFactory, stalled_range: RangeServer
) -> None:
    running = _stack_with_breach_check(stack_factory, stalled_range.url, "allow")
    started = time.monotonic()
    created = _register(running.auth_url, LEAKED)
    assert time.monotonic() - started < TIMEOUT + SLACK + 1
    assert created.status_code == 201, created.text
    log = running.log("auth")
    assert '"breached_password_check_unavailable"' in log
    assert LEAKED not in log
    assert SUFFIX not in log
