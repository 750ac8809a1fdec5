"""SQL for refresh-token families and refresh tokens. Every query is parameterised."""

import uuid
from datetime import datetime

import asyncpg

from bulwark.common.db import Queryable


async def insert_family(
    conn: asyncpg.Connection,
    *,
    user_id: uuid.UUID,
    client_id: str,
    device_id: str | None,
    device_name: str | None,
    platform: str | None,
    ip: str | None,
    absolute_expires_at: datetime,
    scope: str,
) -> uuid.UUID:
    """Start a family (device session) granted ``scope``; return its id, the tokens' ``sid``."""
    family_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO refresh_families (id, user_id, client_id, device_id, device_name,"
        " platform, last_ip, absolute_expires_at, scope)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        family_id,
        user_id,
        client_id,
        device_id,
        device_name,
        platform,
        ip,
        absolute_expires_at,
        scope,
    )
    return family_id


async def insert_token(
    conn: asyncpg.Connection, family_id: uuid.UUID, token_hash: bytes, expires_at: datetime
) -> None:
    """Store a new refresh token's hash as the family's live token."""
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, family_id, expires_at) VALUES ($1, $2, $3)",
        token_hash,
        family_id,
        expires_at,
    )


async def lock_token(conn: asyncpg.Connection, token_hash: bytes) -> asyncpg.Record | None:
    """The token and its family, both row-locked until the transaction ends, or None.

    Columns: family_id, used_at, expires_at, successor_hash, successor_sealed, user_id,
    client_id, revoked_at, absolute_expires_at, device_id, scope, now (the database clock).
    """
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT t.family_id, t.used_at, t.expires_at, t.successor_hash, t.successor_sealed,"
        " f.user_id, f.client_id, f.revoked_at, f.absolute_expires_at, f.device_id, f.scope,"
        " now() AS now"
        " FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id"
        " WHERE t.token_hash = $1 FOR UPDATE OF f, t",
        token_hash,
    )
    return row


async def mark_used(
    conn: asyncpg.Connection,
    family_id: uuid.UUID,
    token_hash: bytes,
    *,
    successor_hash: bytes,
    successor_sealed: bytes,
) -> None:
    """Mark a refresh token used (it can never be exchanged again) and remember its successor.

    Only the newest used token of a family keeps a sealed successor: older ones are cleared,
    as a retry with them is never honoured.
    """
    await conn.execute(
        "UPDATE refresh_tokens SET successor_sealed = NULL"
        " WHERE family_id = $1 AND successor_sealed IS NOT NULL",
        family_id,
    )
    await conn.execute(
        "UPDATE refresh_tokens SET used_at = now(), successor_hash = $2, successor_sealed = $3"
        " WHERE token_hash = $1",
        token_hash,
        successor_hash,
        successor_sealed,
    )


async def live_token_hash(conn: asyncpg.Connection, family_id: uuid.UUID) -> bytes | None:
    """The hash of the family's one unused refresh token, or None."""
    found: bytes | None = await conn.fetchval(
        "SELECT token_hash FROM refresh_tokens WHERE family_id = $1 AND used_at IS NULL",
        family_id,
    )
    return found


async def touch_family(conn: asyncpg.Connection, family_id: uuid.UUID, ip: str | None) -> None:
    """Record a use of the family: last used now, from ``ip``."""
    await conn.execute(
        "UPDATE refresh_families SET last_used_at = now(), last_ip = $2 WHERE id = $1",
        family_id,
        ip,
    )


async def revoke_family(conn: asyncpg.Connection, family_id: uuid.UUID, reason: str) -> None:
    """End a family: none of its refresh tokens works again."""
    await conn.execute(
        "UPDATE refresh_families SET revoked_at = now(), revoked_reason = $2"
        " WHERE id = $1 AND revoked_at IS NULL",
        family_id,
        reason,
    )


async def revoke_user_families(
    conn: asyncpg.Connection, user_id: uuid.UUID, reason: str, *, keep: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """End every live family of a user but ``keep``; return their ids."""
    rows = await conn.fetch(
        "UPDATE refresh_families SET revoked_at = now(), revoked_reason = $2"
        " WHERE user_id = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $3 RETURNING id",
        user_id,
        reason,
        keep,
    )
    return [row["id"] for row in rows]


async def revoke_own_family(
    conn: asyncpg.Connection, family_id: uuid.UUID, user_id: uuid.UUID, reason: str
) -> bool:
    """End family ``family_id`` if it is a live one of ``user_id``; True when it was."""
    row = await conn.fetchrow(
        "UPDATE refresh_families SET revoked_at = now(), revoked_reason = $3"
        " WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL RETURNING id",
        family_id,
        user_id,
        reason,
    )
    return row is not None


async def recently_revoked(conn: Queryable, within_seconds: int) -> list[asyncpg.Record]:
    """Families ended in the last ``within_seconds``: id, age (seconds since revocation)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT id, extract(epoch FROM now() - revoked_at)::float8 AS age FROM refresh_families"
        " WHERE revoked_at > now() - make_interval(secs => $1)",
        float(within_seconds),
    )
    return rows


async def family_is_live(conn: Queryable, family_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    """True when the family exists, belongs to ``user_id``, is not revoked nor expired."""
    live: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM refresh_families WHERE id = $1 AND user_id = $2"
        " AND revoked_at IS NULL AND absolute_expires_at > now())",
        family_id,
        user_id,
    )
    return live


async def live_families(conn: Queryable, user_id: uuid.UUID) -> list[asyncpg.Record]:
    """The user's live sessions, newest first: id, device_id, device_name, platform,
    created_at, last_used_at, last_ip."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT id, device_id, device_name, platform, created_at, last_used_at, last_ip"
        " FROM refresh_families"
        " WHERE user_id = $1 AND revoked_at IS NULL AND absolute_expires_at > now()"
        " ORDER BY created_at DESC LIMIT 100",
        user_id,
    )
    return rows


async def email_verified(conn: asyncpg.Connection, user_id: uuid.UUID) -> bool:
    """Whether ``user_id``'s current address is verified (the ``email_verified`` claim)."""
    verified: bool | None = await conn.fetchval(
        "SELECT email_verified_at IS NOT NULL FROM users WHERE id = $1", user_id
    )
    return bool(verified)
