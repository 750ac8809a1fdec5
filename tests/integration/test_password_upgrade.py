"""A password hash made with weaker argon2 parameters is upgraded at the next successful
login (and left alone by a failed one)."""

from __future__ import annotations

import asyncio
import uuid

import argon2
import asyncpg
import httpx
import pytest

from .conftest import RunningStack
from .helpers import register

pytestmark = pytest.mark.security(stride="S", asvs=("V11.4",))


async def _hash_of(database_url: str, user_id: str, new_hash: str | None = None) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        if new_hash is not None:
            await conn.execute(
                "UPDATE users SET password_hash = $2 WHERE id = $1", uuid.UUID(user_id), new_hash
            )
        stored: str = await conn.fetchval(
            "SELECT password_hash FROM users WHERE id = $1", uuid.UUID(user_id)
        )
        return stored
    finally:
        await conn.close()


def test_a_weak_hash_is_upgraded_at_the_next_successful_login(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    database = stack.databases["auth"]
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(user.password)
    asyncio.run(_hash_of(database, user.user_id, weak))

    failed = httpx.post(
        f"{stack.auth_url}/v1/auth/login",
        json={"email": user.email, "password": "Wrong-Password-1!"},
    )
    assert failed.status_code == 401
    assert asyncio.run(_hash_of(database, user.user_id)) == weak

    ok = httpx.post(
        f"{stack.auth_url}/v1/auth/login", json={"email": user.email, "password": user.password}
    )
    assert ok.status_code == 200
    upgraded = asyncio.run(_hash_of(database, user.user_id))
    assert upgraded != weak
    parameters = argon2.extract_parameters(upgraded)
    assert parameters.type is argon2.Type.ID
    assert parameters.memory_cost >= 19456
    assert parameters.time_cost >= 2
    # And the upgraded hash still verifies the same password.
    again = httpx.post(
        f"{stack.auth_url}/v1/auth/login", json={"email": user.email, "password": user.password}
    )
    assert again.status_code == 200
