"""Breaking the database under a running service: answers stay problem+json and name
nothing internal (no SQL, driver message, table or column, no stack trace)."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from .conftest import RunningStack, StackFactory
from .helpers import PASSWORD, random_email

pytestmark = [pytest.mark.resilience, pytest.mark.security(stride="I", asvs=("V16.5", "V13.4"))]

LEAKS = ("users_gone", "relation", "asyncpg", "Traceback", "SELECT", "INSERT", "postgres", "sql")


async def _execute(database_url: str, *statements: str, name: str = "") -> None:
    """Run ``statements``; ``$1`` in one of them is ``name``."""
    conn = await asyncpg.connect(database_url)
    try:
        for statement in statements:
            await conn.execute(statement, *([name] if "$1" in statement else []))
    finally:
        await conn.close()


def test_broken_schema_and_lost_database_answer_generic_problems(
    stack_factory: StackFactory,
) -> None:
    own: RunningStack = stack_factory(services=["ratelimit", "auth"])
    body = {"email": random_email(), "password": PASSWORD, "displayName": "Db"}
    assert httpx.post(f"{own.auth_url}/v1/users", json=body).status_code == 201

    asyncio.run(_execute(own.databases["auth"], "ALTER TABLE users RENAME TO users_gone"))
    try:
        for response in (
            httpx.post(f"{own.auth_url}/v1/users", json={**body, "email": random_email()}),
            httpx.post(
                f"{own.auth_url}/v1/auth/login",
                json={"email": body["email"], "password": PASSWORD},
            ),
        ):
            assert response.status_code == 500
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["request_id"]
            for leak in LEAKS:
                assert leak.lower() not in response.text.lower(), leak
    finally:
        asyncio.run(_execute(own.databases["auth"], "ALTER TABLE users_gone RENAME TO users"))
    assert (
        httpx.post(
            f"{own.auth_url}/v1/auth/login", json={"email": body["email"], "password": PASSWORD}
        ).status_code
        == 200
    )

    # The database refuses connections: readiness fails, requests get a generic problem.
    name = own.databases["auth"].rsplit("/", 1)[1]
    admin = own.databases["auth"].rsplit("/", 1)[0] + "/postgres"
    asyncio.run(
        _execute(
            admin,
            f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false',  # a name we generated
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            name=name,
        )
    )
    try:
        ready = httpx.get(f"{own.auth_url}/readyz")
        assert ready.status_code == 503
        response = httpx.post(f"{own.auth_url}/v1/users", json={**body, "email": random_email()})
        assert response.status_code in {500, 503}
        assert response.headers["content-type"].startswith("application/problem+json")
        for leak in LEAKS:
            assert leak.lower() not in response.text.lower(), leak
    finally:
        asyncio.run(_execute(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
    assert httpx.get(f"{own.auth_url}/readyz").status_code == 200
