"""SQL of device authorizations (RFC 8628). Every query is parameterised; codes are looked
up by their SHA-256 only."""

import uuid

import asyncpg

from bulwark.common.db import Queryable

_COLUMNS = (
    "client_id, scope, expires_at, interval_seconds, last_polled_at, status, user_id,"
    " family_id, now() AS now"
)


async def insert(
    conn: Queryable,
    *,
    device_code_hash: bytes,
    user_code_hash: bytes,
    client_id: str,
    scope: str,
    lifetime_seconds: int,
    interval_seconds: int,
) -> bool:
    """Store a new pending authorization; False when the user code is taken (try another)."""
    inserted: str | None = await conn.fetchval(
        "INSERT INTO device_authorizations (device_code_hash, user_code_hash, client_id, scope,"
        " expires_at, interval_seconds)"
        " VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), $6)"
        " ON CONFLICT (user_code_hash) DO NOTHING RETURNING client_id",
        device_code_hash,
        user_code_hash,
        client_id,
        scope,
        float(lifetime_seconds),
        interval_seconds,
    )
    return inserted is not None


async def lock_by_device_code(
    conn: asyncpg.Connection, device_code_hash: bytes
) -> asyncpg.Record | None:
    """The authorization of a device code, row-locked until the transaction ends, or None.
    Columns: client_id, scope, expires_at, interval_seconds, last_polled_at, status,
    user_id, family_id, now (the database clock)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM device_authorizations"  # noqa: S608  # constant columns
        " WHERE device_code_hash = $1 FOR UPDATE",
        device_code_hash,
    )
    return row


async def find_by_user_code(
    conn: Queryable, user_code_hash: bytes, *, lock: bool = False
) -> asyncpg.Record | None:
    """The authorization of a user code (columns as `lock_by_device_code`), row-locked
    until the transaction ends when ``lock``, or None."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM device_authorizations"  # noqa: S608  # constant columns
        f" WHERE user_code_hash = $1{' FOR UPDATE' if lock else ''}",
        user_code_hash,
    )
    return row


async def record_poll(
    conn: asyncpg.Connection, device_code_hash: bytes, interval_seconds: int
) -> None:
    """Remember this poll (now) and the interval in force from now on, in seconds."""
    await conn.execute(
        "UPDATE device_authorizations SET last_polled_at = now(), interval_seconds = $2"
        " WHERE device_code_hash = $1",
        device_code_hash,
        interval_seconds,
    )


async def decide(
    conn: asyncpg.Connection, user_code_hash: bytes, *, approved: bool, user_id: uuid.UUID
) -> None:
    """Record the user's answer to a pending authorization."""
    await conn.execute(
        "UPDATE device_authorizations SET status = $2, user_id = $3 WHERE user_code_hash = $1",
        user_code_hash,
        "approved" if approved else "denied",
        user_id,
    )


async def mark_exchanged(
    conn: asyncpg.Connection, device_code_hash: bytes, family_id: uuid.UUID
) -> None:
    """The approved code was exchanged for the session ``family_id``: never again."""
    await conn.execute(
        "UPDATE device_authorizations SET status = 'exchanged', family_id = $2"
        " WHERE device_code_hash = $1",
        device_code_hash,
        family_id,
    )


async def withdraw_approvals(conn: asyncpg.Connection, user_id: uuid.UUID) -> None:
    """Deny every authorization ``user_id`` approved that was not exchanged yet."""
    await conn.execute(
        "UPDATE device_authorizations SET status = 'denied'"
        " WHERE user_id = $1 AND status = 'approved'",
        user_id,
    )
