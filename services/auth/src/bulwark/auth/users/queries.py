"""SQL for users. Every query is parameterised."""

import uuid

import asyncpg

from bulwark.common.db import Queryable


async def insert_user(
    conn: Queryable, email: str, display_name: str, password_hash: str
) -> uuid.UUID | None:
    """Create a user; return its id, or None when the email is already registered."""
    user_id = uuid.uuid4()
    inserted: uuid.UUID | None = await conn.fetchval(
        "INSERT INTO users (id, email, display_name, password_hash) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (lower(email)) DO NOTHING RETURNING id",
        user_id,
        email,
        display_name,
        password_hash,
    )
    return inserted


async def find_by_email(conn: Queryable, email: str) -> asyncpg.Record | None:
    """The user row (id, email, display_name, password_hash, email_verified) for ``email``,
    or None."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT id, email, display_name, password_hash,"
        " email_verified_at IS NOT NULL AS email_verified"
        " FROM users WHERE lower(email) = $1",
        email,
    )
    return row


async def update_password_hash(conn: asyncpg.Connection, user_id: uuid.UUID, new_hash: str) -> None:
    """Replace a user's password hash (used to upgrade hash parameters at login)."""
    await conn.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, new_hash)
