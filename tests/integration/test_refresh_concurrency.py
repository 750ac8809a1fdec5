"""Concurrent refreshes with one refresh token never fork a family."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor

import asyncpg

from .conftest import RunningStack
from .helpers import login, refresh, register


def _family_state(database_url: str, user_id: str) -> tuple[int, int, int]:
    """(live unused tokens in live families, revoked families, reuse events) for the user."""

    async def query() -> tuple[int, int, int]:
        conn = await asyncpg.connect(database_url)
        try:
            owner = uuid.UUID(user_id)
            live = await conn.fetchval(
                "SELECT count(*) FROM refresh_tokens t JOIN refresh_families f"
                " ON f.id = t.family_id WHERE f.user_id = $1 AND t.used_at IS NULL"
                " AND f.revoked_at IS NULL",
                owner,
            )
            revoked = await conn.fetchval(
                "SELECT count(*) FROM refresh_families WHERE user_id = $1"
                " AND revoked_at IS NOT NULL",
                owner,
            )
            events = await conn.fetchval(
                "SELECT count(*) FROM security_events WHERE user_id = $1"
                " AND event_type = 'refresh_reuse_detected'",
                owner,
            )
            return int(live), int(revoked), int(events)
        finally:
            await conn.close()

    return asyncio.run(query())


def test_concurrent_refreshes_with_one_token_leave_at_most_one_live_token(
    stack: RunningStack,
) -> None:
    user = register(stack.auth_url)
    token = str(login(stack.auth_url, user)["refresh_token"])
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda _: refresh(stack.auth_url, token, user), range(8)))
    statuses = sorted(response.status_code for response in responses)
    assert statuses.count(200) <= 1
    assert set(statuses) <= {200, 400}
    live, revoked, events = _family_state(stack.databases["auth"], user.user_id)
    # Every duplicate after the first is a reuse: the family is revoked, nothing stays live.
    assert live == 0
    assert revoked == 1
    assert events >= 1
    for response in responses:
        if response.status_code == 200:
            assert (
                refresh(stack.auth_url, response.json()["refresh_token"], user).status_code == 400
            )


def test_two_refreshes_in_sequence_rotate_normally(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    token = str(login(stack.auth_url, user)["refresh_token"])
    for _ in range(3):
        response = refresh(stack.auth_url, token, user)
        assert response.status_code == 200
        token = response.json()["refresh_token"]
    live, revoked, events = _family_state(stack.databases["auth"], user.user_id)
    assert (live, revoked, events) == (1, 0, 0)
