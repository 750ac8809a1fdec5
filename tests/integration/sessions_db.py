"""Reading the auth database's session state directly, for assertions the HTTP API hides."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg


def family_state(database_url: str, user_id: str) -> tuple[int, int, int]:
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


def events(database_url: str, user_id: str) -> list[tuple[str, str | None]]:
    """The user's security events, oldest first: ``(event_type, device_id)``."""

    async def query() -> list[tuple[str, str | None]]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch(
                "SELECT event_type, device_id FROM security_events WHERE user_id = $1 ORDER BY id",
                uuid.UUID(user_id),
            )
            return [(row["event_type"], row["device_id"]) for row in rows]
        finally:
            await conn.close()

    return asyncio.run(query())


def grant_scope(database_url: str, user_id: str, scope: str) -> None:
    """Give every session of the user the granted ``scope`` (as a grant with a wider scope
    than the mobile login's would have)."""

    async def update() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "UPDATE refresh_families SET scope = $2 WHERE user_id = $1",
                uuid.UUID(user_id),
                scope,
            )
        finally:
            await conn.close()

    asyncio.run(update())
