"""Postgres stopped, restarted and stalled under running services (issue 9, item 2).

The stack runs on a Postgres of its own (the embedded server, started for this module), so
the test can stop it, start it again and freeze it with SIGSTOP without touching the
machine's server. Expected: requests that need the database answer 503 problem+json with
``Retry-After`` within the database timeout (never a 500, never a hang), ``/readyz`` answers
503 within its own deadline, each service logs one warning per outage (no traceback per
request), requests that need no database keep working, everything recovers without a
restart, and logins refused by the outage never count as failures against their address;
the minimum app versions read before the outage stay in force through it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import asyncpg
import httpx
import pytest

from bulwark.devstack.embedded import EmbeddedPostgres

from .conftest import RunningStack, StackFactory, databases_on
from .helpers import MobileUser, bearer, login, register
from .outages import resume, stall

pytestmark = pytest.mark.resilience

DB_TIMEOUT = 1.0
APP_VERSIONS_CACHE_SECONDS = 1
# A change of the minimum app versions is in force within one read period and one read.
READ_BOUND = APP_VERSIONS_CACHE_SECONDS + DB_TIMEOUT + 3
# A request that needs the database waits at most for a connection and for one statement.
BOUND = 2 * DB_TIMEOUT + 1.0
READY_SLACK = 0.75


@pytest.fixture(scope="module")
def postgres(throwaway_postgres: EmbeddedPostgres) -> EmbeddedPostgres:
    return throwaway_postgres


@pytest.fixture(scope="module")
def own(stack_factory: StackFactory, postgres: EmbeddedPostgres) -> RunningStack:
    env = {"DATABASE_TIMEOUT_SECONDS": str(DB_TIMEOUT)}
    api = {**env, "APP_VERSIONS_CACHE_SECONDS": str(APP_VERSIONS_CACHE_SECONDS)}
    return stack_factory(databases=databases_on(postgres.url), env={"auth": env, "api": api})


def _timed(method: str, url: str, **kwargs: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.request(method, url, timeout=30, **kwargs)  # type: ignore[arg-type]
    return response, time.monotonic() - started


def _assert_unavailable(response: httpx.Response, took: float) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["retry-after"]) >= 1
    assert took < BOUND, took
    for leak in ("postgres", "asyncpg", "connection", "sql", "Traceback"):
        assert leak.lower() not in response.text.lower(), leak


def _eventually_ok(method: str, url: str, **kwargs: object) -> httpx.Response:
    give_up = time.monotonic() + 15
    while True:
        response = httpx.request(method, url, timeout=10, **kwargs)  # type: ignore[arg-type]
        if response.status_code < 300 or time.monotonic() > give_up:
            return response
        time.sleep(0.2)


def _warnings(stack: RunningStack, service: str, event: str) -> int:
    return stack.log(service).count(f'"event":"{event}"')


def _session(stack: RunningStack) -> tuple[MobileUser, dict[str, str]]:
    user = register(stack.auth_url)
    return user, bearer(login(stack.auth_url, user)["access_token"], user)


def _check_logs_clean(stack: RunningStack) -> None:
    for service in ("api", "auth"):
        log = stack.log(service)
        assert "Traceback" not in log, service
        assert '"level":"error"' not in log, service
        assert '"event":"unhandled_exception"' not in log, service


@pytest.mark.security(stride="D", asvs=("V16.5",))
def test_postgres_stopped_then_started(own: RunningStack, postgres: EmbeddedPostgres) -> None:
    user, headers = _session(own)
    notes_url = f"{own.api_url}/v1/notes"
    assert httpx.post(notes_url, json={"title": "t", "body": "b"}, headers=headers).is_success
    before = {s: _warnings(own, s, "database_unavailable") for s in ("api", "auth")}

    postgres.stop()
    try:
        for _ in range(5):
            _assert_unavailable(*_timed("GET", notes_url, headers=headers))
        _assert_unavailable(*_timed("GET", f"{own.api_url}/readyz"))
        _assert_unavailable(*_timed("GET", f"{own.auth_url}/readyz"))
        _assert_unavailable(*_timed("GET", f"{own.auth_url}/v1/auth/sessions", headers=headers))
        body = {"email": user.email, "password": user.password}
        _assert_unavailable(*_timed("POST", f"{own.auth_url}/v1/auth/login", json=body))
        # What needs no database keeps working: the token is checked against the JWKS.
        assert httpx.get(f"{own.api_url}/v1/me", headers=headers).status_code == 200
    finally:
        postgres.start()

    assert _eventually_ok("GET", notes_url, headers=headers).status_code == 200
    assert _eventually_ok("GET", f"{own.auth_url}/readyz").status_code == 200
    assert _eventually_ok("GET", f"{own.api_url}/readyz").status_code == 200
    relogin = _eventually_ok(
        "POST",
        f"{own.auth_url}/v1/auth/login",
        json={"email": user.email, "password": user.password},
    )
    assert relogin.status_code == 200, relogin.text
    # One warning per service for the whole outage, not one per failed request.
    assert _warnings(own, "api", "database_unavailable") == before["api"] + 1
    assert _warnings(own, "auth", "database_unavailable") == before["auth"] + 1
    _check_logs_clean(own)


@pytest.mark.security(stride="D", asvs=("V16.5",))
def test_postgres_stalled(own: RunningStack, postgres: EmbeddedPostgres) -> None:
    _user, headers = _session(own)
    notes_url = f"{own.api_url}/v1/notes"
    assert httpx.get(notes_url, headers=headers).status_code == 200

    stall(postgres)
    try:
        for _ in range(3):
            _assert_unavailable(*_timed("GET", notes_url, headers=headers))
        for url in (own.api_url, own.auth_url):
            # Readiness has a deadline of its own: one database timeout, not one per wait.
            ready, took = _timed("GET", f"{url}/readyz")
            _assert_unavailable(ready, took)
            assert took < DB_TIMEOUT + READY_SLACK, took
    finally:
        resume(postgres)
    assert _eventually_ok("GET", notes_url, headers=headers).status_code == 200
    assert _eventually_ok("GET", f"{own.auth_url}/readyz").status_code == 200
    _check_logs_clean(own)


@pytest.mark.security(stride="D", asvs=("V2.4", "V16.5"))
def test_logins_refused_by_an_outage_do_not_count_against_the_address(
    own: RunningStack, postgres: EmbeddedPostgres
) -> None:
    """25 users with correct passwords log in from one address while Postgres is down (the
    address may fail on 20 distinct emails an hour), and one of them retries 8 times (an
    email has 5 attempts per 15 minutes): every one is a 503, and afterwards a new user
    from that address logs in, as do they."""
    users = [register(own.auth_url) for _ in range(25)]
    newcomer = register(own.auth_url)
    persistent = register(own.auth_url)  # retries through the outage, past 5 attempts
    answers: list[int] = []

    def attempt(user: MobileUser) -> None:
        body = {"email": user.email, "password": user.password}
        answers.append(
            httpx.post(f"{own.auth_url}/v1/auth/login", json=body, timeout=30).status_code
        )

    postgres.stop()
    try:
        for _ in range(8):
            attempt(persistent)
        for batch in range(0, len(users), 5):
            threads = [
                threading.Thread(target=attempt, args=(u,)) for u in users[batch : batch + 5]
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
    finally:
        postgres.start()
    assert answers == [503] * (len(users) + 8), answers

    body = {"email": newcomer.email, "password": newcomer.password}
    answer = _eventually_ok("POST", f"{own.auth_url}/v1/auth/login", json=body)
    assert answer.status_code == 200, answer.text
    login(own.auth_url, users[0])
    login(own.auth_url, persistent)  # 8 attempts refused by the outage never counted
    _check_logs_clean(own)


def _sql(url: str, statement: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def _until(done: Callable[[], bool], seconds: float) -> None:
    give_up = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < give_up, f"not done within {seconds} s"
        time.sleep(0.1)


@pytest.mark.security(stride="D", asvs=("V4",))
def test_the_minimum_app_versions_stay_in_force_while_postgres_is_down(
    own: RunningStack, postgres: EmbeddedPostgres
) -> None:
    """docs/app-versions.md: a failed read keeps the last manifest (set here in SQL; the
    operator's command is tested in test_app_versions.py)."""
    _user, headers = _session(own)
    me, published = f"{own.api_url}/v1/me", f"{own.api_url}/v1/app-versions"
    old, current = {**headers, "X-App-Version": "1.0.0"}, {**headers, "X-App-Version": "2.0.0"}
    api_db = own.databases["api"]
    _sql(api_db, "INSERT INTO app_versions (platform, minimum_version) VALUES ('ios', '2.0.0')")
    try:
        _until(
            lambda: httpx.get(me, headers=old).status_code == 426, APP_VERSIONS_CACHE_SECONDS + 5
        )
        failed_reads = own.log("api").count('"event":"app_versions_unavailable"')
        postgres.stop()
        try:
            _until(
                lambda: own.log("api").count('"event":"app_versions_unavailable"') > failed_reads,
                READ_BOUND,
            )
            # /v1/me needs no database: the policy still answers from the last manifest.
            assert httpx.get(me, headers=old).status_code == 426
            assert httpx.get(me, headers=current).status_code == 200
            assert httpx.get(published).json() == {"minimumVersions": {"ios": "2.0.0"}}
        finally:
            postgres.start()
    finally:
        _eventually_ok("GET", f"{own.api_url}/readyz")
        _sql(api_db, "DELETE FROM app_versions")
        _until(
            lambda: httpx.get(me, headers=old).status_code == 200, APP_VERSIONS_CACHE_SECONDS + 5
        )
    _check_logs_clean(own)
