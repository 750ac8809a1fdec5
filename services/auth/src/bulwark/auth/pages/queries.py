"""SQL of page sign-ins (``page_sessions``). Every query is parameterised; the cookie's
token is looked up by its SHA-256 only."""

import uuid

import asyncpg

from bulwark.common.db import Queryable


async def insert(
    conn: Queryable, token_hash: bytes, user_id: uuid.UUID, lifetime_seconds: int
) -> None:
    """Store a sign-in of ``user_id`` valid ``lifetime_seconds``."""
    await conn.execute(
        "INSERT INTO page_sessions (token_hash, user_id, expires_at)"
        " VALUES ($1, $2, now() + make_interval(secs => $3))",
        token_hash,
        user_id,
        float(lifetime_seconds),
    )


async def signed_in_user(conn: Queryable, token_hash: bytes) -> asyncpg.Record | None:
    """The user of an unexpired sign-in (columns id, email), or None."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT u.id, u.email FROM page_sessions s JOIN users u ON u.id = s.user_id"
        " WHERE s.token_hash = $1 AND s.expires_at > now()",
        token_hash,
    )
    return row


async def delete_for_user(conn: Queryable, user_id: uuid.UUID) -> None:
    """End every page sign-in of ``user_id`` (logout of every device)."""
    await conn.execute("DELETE FROM page_sessions WHERE user_id = $1", user_id)
