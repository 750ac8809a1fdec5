"""No request holds a database connection past its end, on any path (issue 9, item 1).

A request refused by authentication costs no connection; a request the client abandons
mid-flight gives its connection back; an exhausted pool answers 503 problem+json with
``Retry-After`` instead of a hang, logged once per burst. Each test ends with the pool back
at its idle level (``bulwark_db_pool_connections{pool="request",state="in_use"}`` is 0),
no session ``idle in transaction`` in Postgres, and a live user served.

The module's stack has a pool of 3 connections and a 1 s database timeout, so a leak shows
within a few requests and a wait that should be bounded cannot hide.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from bulwark.api.app import create_app as create_api
from bulwark.api.settings import from_env as api_settings
from bulwark.auth.app import create_app as create_auth
from bulwark.auth.settings import from_env as auth_settings

from .conftest import RunningStack, StackFactory
from .helpers import MobileUser, bearer, login, register
from .prometheus import scrape, value

pytestmark = pytest.mark.security(stride="D", asvs=("V15.2", "V16.5"))

POOL_SIZE = 3
DB_TIMEOUT = 1.0
TIMEOUT = httpx.Timeout(10.0)
NOTE_ID = "00000000-0000-4000-8000-000000000000"

# Every authenticated route: (service, method, path, JSON body). test_every_authenticated_
# route_is_listed keeps this list complete.
AUTHENTICATED_ROUTES = [
    ("api", "GET", "/v1/me", None),
    ("api", "GET", "/v1/notes", None),
    ("api", "POST", "/v1/notes", {"title": "t", "body": "b"}),
    ("api", "GET", f"/v1/notes/{NOTE_ID}", None),
    ("api", "PATCH", f"/v1/notes/{NOTE_ID}", {"title": "t"}),
    ("api", "DELETE", f"/v1/notes/{NOTE_ID}", None),
    ("api", "POST", "/v1/uploads", {"filename": "a.png", "contentType": "image/png", "size": 1}),
    ("api", "GET", f"/v1/uploads/{NOTE_ID}", None),
    ("api", "POST", f"/v1/uploads/{NOTE_ID}/complete", None),
    ("api", "DELETE", f"/v1/uploads/{NOTE_ID}", None),
    ("auth", "GET", "/v1/auth/sessions", None),
    ("auth", "DELETE", f"/v1/auth/sessions/{NOTE_ID}", None),
    ("auth", "POST", "/v1/auth/logout", None),
    ("auth", "POST", "/v1/auth/logout-all", None),
    ("auth", "POST", "/v1/auth/password", {"currentPassword": "x", "newPassword": "y"}),
    ("auth", "POST", "/v1/auth/email-verification", None),
    ("auth", "POST", "/v1/auth/email-change", {"newEmail": "a@example.com", "password": "x"}),
    ("auth", "POST", "/v1/auth/account-deletion", {"password": "x"}),
]


@pytest.fixture(scope="module")
def stack(stack_factory: StackFactory) -> RunningStack:
    small_pool = {"DATABASE_POOL_SIZE": str(POOL_SIZE), "DATABASE_TIMEOUT_SECONDS": str(DB_TIMEOUT)}
    return stack_factory(env={"auth": small_pool, "api": small_pool})


def _url(stack: RunningStack, service: str, path: str) -> str:
    return f"{stack.auth_url if service == 'auth' else stack.api_url}{path}"


def _in_use(stack: RunningStack, service: str) -> float:
    _text, series = scrape(stack, service)
    return value(series, "bulwark_db_pool_connections", pool="request", state="in_use")


def _idle_in_transaction(stack: RunningStack) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(stack.databases["auth"])
        try:
            names = [url.rsplit("/", 1)[1] for url in stack.databases.values()]
            found: int = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = ANY($1::text[]) AND state LIKE 'idle in transaction%'",
                names,
            )
            return found
        finally:
            await conn.close()

    return asyncio.run(count())


def _assert_pools_idle_and_serving(stack: RunningStack, live: MobileUser, token: str) -> None:
    """Both pools back to nothing in use (within 3 s), nothing idle in a transaction, and a
    live user's requests that need the database answered promptly."""
    give_up = time.monotonic() + 3
    while (_in_use(stack, "api"), _in_use(stack, "auth")) != (0, 0):
        assert time.monotonic() < give_up, "a pooled connection was never given back"
        time.sleep(0.1)
    assert _idle_in_transaction(stack) == 0
    headers = bearer(token, live)
    notes = httpx.get(f"{stack.api_url}/v1/notes", headers=headers, timeout=5)
    assert notes.status_code == 200, notes.text
    sessions = httpx.get(f"{stack.auth_url}/v1/auth/sessions", headers=headers, timeout=5)
    assert sessions.status_code == 200, sessions.text


@dataclass
class Users:
    live: MobileUser
    live_token: str
    ended: MobileUser
    ended_token: str


@pytest.fixture(scope="module")
def users(stack: RunningStack) -> Users:
    live = register(stack.auth_url)
    live_token = str(login(stack.auth_url, live)["access_token"])
    ended = register(stack.auth_url)
    ended_token = str(login(stack.auth_url, ended)["access_token"])
    logout = httpx.post(f"{stack.auth_url}/v1/auth/logout", headers=bearer(ended_token, ended))
    assert logout.status_code == 204
    return Users(live, live_token, ended, ended_token)


def test_every_authenticated_route_is_listed() -> None:
    """The route list above is every route that authenticates its caller, in both apps."""
    env = {"BULWARK_ENV": "test", "DATABASE_URL": "postgresql://unused/x", "KEYS_DIR": "/none"}
    found = set()
    for service, app in (
        ("api", create_api(api_settings(env)).app),  # type: ignore[attr-defined]
        ("auth", create_auth(auth_settings(env)).app),  # type: ignore[attr-defined]
    ):
        for route in app.routes:
            for method, (handler, _kwargs) in getattr(route, "route_handler_map", {}).items():
                params = handler.fn.__code__.co_varnames
                if "caller" in params or "claims" in params:
                    path = route.path.replace("{note_id:uuid}", NOTE_ID)
                    path = path.replace("{upload_id:uuid}", NOTE_ID)
                    found.add((service, method, path.replace("{session_id:str}", NOTE_ID)))
    assert found == {(service, method, path) for service, method, path, _ in AUTHENTICATED_ROUTES}


@pytest.mark.parametrize("route", AUTHENTICATED_ROUTES, ids=lambda r: f"{r[1]} {r[2]}")
def test_an_ended_sessions_token_takes_no_connection(
    stack: RunningStack, users: Users, route: tuple[str, str, str, dict[str, str] | None]
) -> None:
    """3 x pool size requests with the token of a logged-out session: each is a 401, and
    afterwards the pools are idle and a live user is served."""
    service, method, path, body = route
    with httpx.Client(timeout=TIMEOUT) as client:
        for _ in range(3 * POOL_SIZE):
            response = client.request(
                method,
                _url(stack, service, path),
                headers=bearer(users.ended_token, users.ended),
                json=body,
            )
            assert response.status_code == 401, response.text
            assert response.headers["content-type"].startswith("application/problem+json")
    _assert_pools_idle_and_serving(stack, users.live, users.live_token)


class NotesLocked:
    """``LOCK TABLE notes IN ACCESS EXCLUSIVE MODE`` held by a connection of the test until
    the ``with`` block ends: every API statement on notes waits (a stalled database, as the
    API sees it)."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._locked = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._hold()), daemon=True)

    async def _hold(self) -> None:
        conn = await asyncpg.connect(self._url)
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE notes IN ACCESS EXCLUSIVE MODE")
                self._locked.set()
                await asyncio.to_thread(self._release.wait, 30)
        finally:
            await conn.close()

    def __enter__(self) -> NotesLocked:
        self._thread.start()
        assert self._locked.wait(5)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._release.set()
        self._thread.join(5)


def _in_parallel(count: int, call: Callable[[], httpx.Response]) -> list[httpx.Response]:
    answers: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda: answers.append(call())) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return answers


def _log_events(stack: RunningStack, service: str, event: str) -> int:
    return stack.log(service).count(f'"event":"{event}"')


def test_an_exhausted_pool_answers_503_with_retry_after_and_logs_once(
    stack: RunningStack, users: Users
) -> None:
    """With every connection stuck on a lock, 3 x pool size creates: each is a 503
    problem+json with Retry-After within a bounded time (the wait for a connection and the
    statement are both bounded), one warning for the burst, one line when it is over."""
    exhausted_before = _log_events(stack, "api", "database_pool_exhausted")
    recovered_before = _log_events(stack, "api", "database_pool_recovered")
    headers = bearer(users.live_token, users.live)

    def create() -> httpx.Response:
        return httpx.post(
            f"{stack.api_url}/v1/notes",
            json={"title": "t", "body": "b"},
            headers=headers,
            timeout=TIMEOUT,
        )

    started = time.monotonic()
    with NotesLocked(stack.databases["api"]):
        answers = _in_parallel(3 * POOL_SIZE, create)
    took = time.monotonic() - started
    assert [a.status_code for a in answers] == [503] * 3 * POOL_SIZE, [a.text for a in answers]
    for answer in answers:
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert int(answer.headers["retry-after"]) >= 1
        detail = answer.json()["detail"].lower()
        for leak in ("notes", "lock", "statement", "asyncpg", "timeout", "pool"):
            assert leak not in detail, detail
    # Each request waits at most one timeout for a connection and one per statement.
    assert took < 4 * DB_TIMEOUT + 2, took
    _assert_pools_idle_and_serving(stack, users.live, users.live_token)
    assert _log_events(stack, "api", "database_pool_exhausted") == exhausted_before + 1
    assert _log_events(stack, "api", "database_pool_recovered") == recovered_before + 1
    assert '"event":"unhandled_exception"' not in stack.log("api")


def _raw_request(method: str, path: str, token: str, body: dict[str, str] | None) -> bytes:
    text = json.dumps(body) if body is not None else ""
    return (
        # If-Match: a PATCH without one is refused (428) before it takes a connection.
        f"{method} {path} HTTP/1.1\r\nHost: bulwark\r\nAuthorization: Bearer {token}\r\n"
        "If-Match: *\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(text.encode())}\r\n\r\n{text}"
    ).encode()


def _send_and_hang_up(url: str, requests: list[bytes], wait: float) -> None:
    host, port = url.removeprefix("http://").split(":")
    sockets = []
    for request in requests:
        sock = socket.create_connection((host, int(port)), timeout=5)
        sock.sendall(request)
        sockets.append(sock)
    time.sleep(wait)
    for sock in sockets:
        sock.close()


@pytest.mark.parametrize("route", AUTHENTICATED_ROUTES, ids=lambda r: f"{r[1]} {r[2]}")
def test_requests_abandoned_mid_flight_give_their_connections_back(
    stack: RunningStack, users: Users, route: tuple[str, str, str, dict[str, str] | None]
) -> None:
    """2 x pool size clients of a live session send a request and hang up before the answer:
    afterwards the pools are idle, nothing is idle in a transaction, a live user is served."""
    service, method, path, body = route
    user = register(stack.auth_url)  # its own session: the route may end it
    token = str(login(stack.auth_url, user)["access_token"])
    request = _raw_request(method, path, token, body)
    _send_and_hang_up(_url(stack, service, ""), [request] * (2 * POOL_SIZE), wait=0.05)
    _assert_pools_idle_and_serving(stack, users.live, users.live_token)


def test_requests_abandoned_while_holding_connections_give_them_back(
    stack: RunningStack, users: Users
) -> None:
    """The hard case: clients hang up while their requests hold every connection (stuck on a
    lock) and others wait for one. All come back; the API serves again."""
    request = _raw_request("POST", "/v1/notes", users.live_token, {"title": "t", "body": "gone"})
    with NotesLocked(stack.databases["api"]):
        # The first POOL_SIZE hold connections, the others wait for one.
        _send_and_hang_up(stack.api_url, [request] * (2 * POOL_SIZE), wait=0.3)
    _assert_pools_idle_and_serving(stack, users.live, users.live_token)
