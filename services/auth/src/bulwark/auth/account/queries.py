"""SQL for the account flows. Every query is parameterised."""

import uuid

import asyncpg

from bulwark.common.db import Queryable

#: A password hash no password verifies against (argon2 refuses it as malformed).
UNUSABLE_PASSWORD_HASH = "!"  # noqa: S105  # the opposite of a password


async def find_user(conn: Queryable, user_id: uuid.UUID) -> asyncpg.Record | None:
    """The live (not deleted) user ``user_id``: id, email, display_name, password_hash,
    email_verified; or None."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT id, email, display_name, password_hash,"
        " email_verified_at IS NOT NULL AS email_verified"
        " FROM users WHERE id = $1 AND deleted_at IS NULL",
        user_id,
    )
    return row


async def find_user_by_email(conn: Queryable, email: str) -> asyncpg.Record | None:
    """`find_user`, by normalised address."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT id, email, display_name, password_hash,"
        " email_verified_at IS NOT NULL AS email_verified"
        " FROM users WHERE lower(email) = $1 AND deleted_at IS NULL",
        email,
    )
    return row


async def set_password_hash(conn: Queryable, user_id: uuid.UUID, password_hash: str) -> None:
    """Replace the user's password hash."""
    await conn.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, password_hash)


async def mark_verified(conn: Queryable, user_id: uuid.UUID, email: str) -> bool:
    """Record that ``email`` reaches ``user_id``; False when it is no longer their address
    (changed since the mail went out)."""
    status: str = await conn.execute(
        "UPDATE users SET email_verified_at = coalesce(email_verified_at, now())"
        " WHERE id = $1 AND email = $2 AND deleted_at IS NULL",
        user_id,
        email,
    )
    return status.endswith(" 1")


async def change_email(conn: asyncpg.Connection, user_id: uuid.UUID, email: str) -> bool:
    """Make ``email`` (already proven to reach the user) the user's address; False when
    another account has it, even one registered at the same moment (the unique index
    decides, inside a savepoint, so the caller's transaction goes on)."""
    try:
        async with conn.transaction():
            row = await conn.fetchrow(
                "UPDATE users SET email = $2, email_verified_at = now()"
                " WHERE id = $1 AND deleted_at IS NULL RETURNING id",
                user_id,
                email,
            )
    except asyncpg.UniqueViolationError:
        return False
    return row is not None


async def erase_user(conn: Queryable, user_id: uuid.UUID) -> None:
    """Turn ``user_id`` into a tombstone without personal data and erase what refers to it:
    account tokens, the last login, queued mail, anomaly flags, and the IPs and device ids
    of its security events and sessions. The sessions must already be ended. The tombstone
    and its sessions are deleted later (`purge_tombstones`)."""
    await conn.execute("SELECT set_config('bulwark.erase_user', $1, true)", str(user_id))
    await conn.execute(
        "UPDATE users SET email = $2, display_name = 'deleted', password_hash = $3,"
        " email_verified_at = NULL, deleted_at = now() WHERE id = $1",
        user_id,
        f"{user_id}@deleted.invalid",
        UNUSABLE_PASSWORD_HASH,
    )
    await conn.execute(
        "UPDATE refresh_families SET device_id = NULL, device_name = NULL, platform = NULL,"
        " last_ip = NULL WHERE user_id = $1",
        user_id,
    )
    await conn.execute(
        "UPDATE security_events SET ip = NULL, device_id = NULL"
        " WHERE user_id = $1 AND (ip IS NOT NULL OR device_id IS NOT NULL)",
        user_id,
    )
    for statement in (
        "DELETE FROM account_tokens WHERE user_id = $1",
        "DELETE FROM last_logins WHERE user_id = $1",
        "DELETE FROM mail_outbox WHERE user_id = $1",
        "DELETE FROM anomaly_flags WHERE user_id = $1",
    ):
        await conn.execute(statement, user_id)
    await conn.execute(
        "INSERT INTO account_deletions (user_id) VALUES ($1) ON CONFLICT DO NOTHING", user_id
    )


async def purge_tombstones(conn: Queryable, older_than_seconds: int, limit: int) -> int:
    """Delete up to ``limit`` tombstones deleted over ``older_than_seconds`` ago (their
    sessions' access tokens have all expired), with their sessions; return how many."""
    status: str = await conn.execute(
        "DELETE FROM users WHERE id IN (SELECT id FROM users WHERE deleted_at IS NOT NULL"
        " AND deleted_at < now() - make_interval(secs => $1) LIMIT $2)",
        float(older_than_seconds),
        limit,
    )
    return int(status.rsplit(maxsplit=1)[-1])
