"""SQL of authorization codes (RFC 6749 §4.1). Every query is parameterised; codes are
looked up by their SHA-256 only."""

import uuid

import asyncpg

from bulwark.common.db import Queryable


async def insert(
    conn: Queryable,
    *,
    code_hash: bytes,
    client_id: str,
    redirect_uri: str,
    redirect_uri_sent: bool,
    code_challenge: str,
    scope: str,
    user_id: uuid.UUID,
    lifetime_seconds: int,
) -> None:
    """Store a new authorization code, valid ``lifetime_seconds``."""
    await conn.execute(
        "INSERT INTO authorization_codes (code_hash, client_id, redirect_uri,"
        " redirect_uri_sent, code_challenge, scope, user_id, expires_at)"
        " VALUES ($1, $2, $3, $8, $4, $5, $6, now() + make_interval(secs => $7))",
        code_hash,
        client_id,
        redirect_uri,
        code_challenge,
        scope,
        user_id,
        float(lifetime_seconds),
        redirect_uri_sent,
    )


async def lock(conn: asyncpg.Connection, code_hash: bytes) -> asyncpg.Record | None:
    """The code, row-locked until the transaction ends, or None. Columns: client_id,
    redirect_uri, redirect_uri_sent, code_challenge, scope, user_id, expires_at, used_at,
    family_id, now."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT client_id, redirect_uri, redirect_uri_sent, code_challenge, scope, user_id,"
        " expires_at, used_at, family_id, now() AS now"
        " FROM authorization_codes WHERE code_hash = $1 FOR UPDATE",
        code_hash,
    )
    return row


async def mark_used(
    conn: asyncpg.Connection, code_hash: bytes, family_id: uuid.UUID | None
) -> None:
    """The code was presented: never again. ``family_id`` is the session its exchange
    started (None when the exchange was refused)."""
    await conn.execute(
        "UPDATE authorization_codes SET used_at = now(), family_id = $2 WHERE code_hash = $1",
        code_hash,
        family_id,
    )


async def spend_unused(conn: asyncpg.Connection, user_id: uuid.UUID) -> None:
    """Mark every unused code of ``user_id`` used: none can be exchanged any more."""
    await conn.execute(
        "UPDATE authorization_codes SET used_at = now() WHERE user_id = $1 AND used_at IS NULL",
        user_id,
    )
