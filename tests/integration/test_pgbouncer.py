"""The services behind PgBouncer (Debian's binary, ``make pgbouncer``) in transaction pooling.

A transaction pooler lends a server connection for one transaction only, which breaks two
things a direct connection gives for free: session settings (PgBouncer refuses our
``statement_timeout`` as a startup parameter) and prepared statements (PgBouncer 1.18, the one
Debian bookworm ships, cannot carry them between transactions, and asyncpg caches one per
query). ``DATABASE_POOL_MODE=transaction`` (`bulwark.common.db`) turns the statement cache off
and sets the timeouts in every transaction; these tests show the timeouts still hold, and
that the migrations and a whole mobile session, many users at once, work through it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import httpx
import pytest

from bulwark.common.db import open_database
from bulwark.devstack.databases import create_databases, drop_databases, unique_names
from bulwark.devstack.stack import console_script

from .conftest import StackFactory
from .helpers import bearer, login, refresh, register
from .pgbouncer import PgBouncer

pytestmark = pytest.mark.resilience

_POOL_SIZE = 3  # server connections per database: far fewer than the services' pools


@pytest.fixture(scope="module")
def bouncer(database_server_url: str) -> Iterator[PgBouncer]:
    """One PgBouncer for the module, in front of the test Postgres."""
    with PgBouncer(database_server_url, pool_size=_POOL_SIZE) as running:
        yield running


@pytest.fixture(scope="module")
def databases(database_server_url: str) -> Iterator[dict[str, str]]:
    """Fresh, empty auth and api databases (``{"auth": url, "api": url}``) on the test
    Postgres; dropped at the end of the module."""
    names = unique_names()
    urls = asyncio.run(create_databases(database_server_url, names.values()))
    yield {service: urls[name] for service, name in names.items()}
    # PgBouncer may still hold server connections to them: drop_databases ends those.
    asyncio.run(drop_databases(database_server_url, names.values()))


async def test_the_statement_timeout_holds_behind_pgbouncer(
    bouncer: PgBouncer, databases: dict[str, str]
) -> None:
    db = await open_database(
        bouncer.url(databases["api"]), timeout_seconds=0.5, pool_mode="transaction"
    )
    try:
        assert await db.fetchval("SELECT current_setting('statement_timeout')") == "500ms"
        async with db.transaction() as conn:
            idle = await conn.fetchval(
                "SELECT current_setting('idle_in_transaction_session_timeout')"
            )
            assert idle == "10s"
            # The server cancels it, not the client: the client's own bound is set far off.
            with pytest.raises(asyncpg.QueryCanceledError):
                await conn.fetchval("SELECT pg_sleep(3)", timeout=30)
        # The settings were local to those transactions: the pooled server connections keep
        # nothing (any other client of PgBouncer gets its own defaults).
        raw = await asyncpg.connect(bouncer.url(databases["api"]), statement_cache_size=0)
        try:
            assert await raw.fetchval("SELECT current_setting('statement_timeout')") == "0"
        finally:
            await raw.close()
    finally:
        await db.close()


async def test_many_tasks_share_few_server_connections(
    bouncer: PgBouncer, databases: dict[str, str]
) -> None:
    """More client connections than server ones, statements of different shapes interleaved:
    with asyncpg's statement cache on, one task's prepared statement would be looked up on a
    server connection that never saw it."""
    db = await open_database(bouncer.url(databases["api"]), max_size=12, pool_mode="transaction")

    async def worker(n: int) -> None:
        for i in range(15):
            assert await db.fetchval("SELECT $1::int + $2::int", n, i) == n + i
            assert await db.fetchval("SELECT $1::text || 'x'", str(n)) == f"{n}x"
            async with db.transaction() as conn:
                assert await conn.fetchval("SELECT $1::bigint * 2", i) == 2 * i

    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(worker(n) for n in range(12)))
    finally:
        await db.close()


def _session(auth_url: str, api_url: str) -> None:
    """One user's whole session; asserts every step."""
    user = register(auth_url)
    tokens = login(auth_url, user)
    auth = bearer(tokens["access_token"], user)
    assert httpx.get(f"{api_url}/v1/me", headers=auth).json()["id"] == user.user_id
    # With an Idempotency-Key: its transaction-scoped lock and row work through the pooler.
    keyed = {**auth, "Idempotency-Key": f'"{uuid.uuid4()}"'}
    created = httpx.post(f"{api_url}/v1/notes", json={"title": "t", "body": "b"}, headers=keyed)
    assert created.status_code == 201, created.text
    retried = httpx.post(f"{api_url}/v1/notes", json={"title": "t", "body": "b"}, headers=keyed)
    assert retried.json() == created.json()
    note = f"{api_url}/v1/notes/{created.json()['id']}"
    changed = httpx.patch(note, json={"body": "c"}, headers={**auth, "If-Match": '"1"'})
    assert changed.json()["body"] == "c"
    listed = httpx.get(f"{api_url}/v1/notes", headers=auth).json()["items"]
    assert [item["body"] for item in listed] == ["c"]
    assert httpx.delete(note, headers=auth).status_code == 204
    assert httpx.get(note, headers=auth).status_code == 404

    first = str(tokens["refresh_token"])
    middle = refresh(auth_url, first, user)
    assert middle.status_code == 200, middle.text
    newest = refresh(auth_url, middle.json()["refresh_token"], user)
    assert newest.status_code == 200, newest.text
    # Not the live token's predecessor, so a reuse even within the retry grace window.
    assert refresh(auth_url, first, user).json()["error"] == "invalid_grant"
    assert refresh(auth_url, newest.json()["refresh_token"], user).status_code == 400

    again = login(auth_url, user)
    again_auth = bearer(again["access_token"], user)
    assert httpx.post(f"{auth_url}/v1/auth/logout", headers=again_auth).status_code == 204
    assert refresh(auth_url, str(again["refresh_token"]), user).status_code == 400


def test_mobile_sessions_through_pgbouncer(
    bouncer: PgBouncer, databases: dict[str, str], stack_factory: StackFactory
) -> None:
    pooled = {"DATABASE_POOL_MODE": "transaction"}
    # The stack runs `bulwark-auth migrate` and `bulwark-api migrate` first, through PgBouncer
    # too (each migration's advisory lock is its transaction's).
    stack = stack_factory(
        databases={service: bouncer.url(url) for service, url in databases.items()},
        env={"auth": pooled, "api": pooled},
    )
    assert all(f":{bouncer.port}/" in stack.env[s]["DATABASE_URL"] for s in ("auth", "api"))
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(_session, stack.auth_url, stack.api_url) for _ in range(8)]
        for future in futures:
            future.result(timeout=60)
    # The operator's commands work through PgBouncer as well.
    for service in ("auth", "api"):
        listed = subprocess.run(  # noqa: S603 - our own console script
            [console_script(f"bulwark-{service}"), "flags", "list", "--json"],
            env={**os.environ, "DATABASE_URL": stack.env[service]["DATABASE_URL"]},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert listed.returncode == 0, listed.stderr
