"""Deleting an account (App Store Review Guideline 5.1.1(v), Google Play's account deletion
policy; docs/account.md).

The user proves the password again. In one transaction every session ends, the user row
becomes a tombstone without personal data, the auth data that refers to the user is deleted
or stripped of IPs and device ids (security events stay, for their retention, without them),
queued mail about the user is dropped, and the deletion is written to the
``account_deletions`` outbox. After the commit the ended sessions are listed as revoked (the
API refuses their access tokens within a second) and the relay (`relay_forever`) publishes
the deletion to the API's stream (`bulwark.common.account_deletions`), where the API deletes
the user's notes and uploads. A notice goes to the address the account had.
"""

import asyncio
import uuid

import asyncpg
import redis.asyncio as redis

from bulwark.auth.account import mailing, queries
from bulwark.auth.account.password_change import reauthenticate
from bulwark.auth.mail.catalog import MailKind
from bulwark.auth.passwords import PasswordHasher
from bulwark.auth.security_events import SecurityEvent, record
from bulwark.auth.sessions.ending import SessionEnder, end_user_sessions
from bulwark.auth.settings import AuthSettings
from bulwark.common.account_deletions import publish as publish_deletion
from bulwark.common.db import Database, DatabaseUnavailable
from bulwark.common.logging import get_logger
from bulwark.common.outages import OutageLog

_log = get_logger(__name__)
#: Pause between relay rounds that found nothing to publish, in seconds.
RELAY_IDLE_SECONDS = 1.0
#: Longest one Redis command of the relay may take, in seconds.
RELAY_TIMEOUT_SECONDS = 2.0


async def delete_account(
    user_id: uuid.UUID,
    password: str,
    *,
    db: Database,
    settings: AuthSettings,
    hasher: PasswordHasher,
    ender: SessionEnder,
    locale: str,
    ip: str | None,
) -> None:
    """Delete ``user_id``'s account once ``password`` is proven.

    Raises:
        WrongPassword: the password is wrong (400, ``password``; nothing deleted).
        Unauthorized: the account is already gone (401).
        DatabaseUnavailable: Postgres cannot answer (503; nothing deleted).
    """
    user = await reauthenticate(db, hasher, user_id, password, ip=ip, field="password")
    async with db.transaction() as conn:
        ended = await end_user_sessions(conn, user_id, "account_deleted")
        await queries.erase_user(conn, user_id)
        await record(conn, SecurityEvent.ACCOUNT_DELETED, user_id=user_id)
        await mailing.queue(
            conn,
            settings,
            MailKind.ACCOUNT_DELETED,
            user_id=None,  # kept after the erasure: it tells the old address, then goes
            recipient=user["email"],
            locale=locale,
        )
    await ender.publish(ended)


async def publish_pending(db: Database, client: redis.Redis, prefix: str) -> int:
    """Publish the deletions not published yet to the API's stream, oldest first; return
    how many. A deletion published twice is harmless: the API's deletion is idempotent.

    Raises:
        DatabaseUnavailable, asyncpg.PostgresError: Postgres failed.
        redis.RedisError, TimeoutError: Redis failed (the deletion stays pending).
    """
    rows = await db.fetch(
        "SELECT user_id, deleted_at FROM account_deletions WHERE published_at IS NULL"
        " ORDER BY deleted_at LIMIT 100"
    )
    for row in rows:
        async with asyncio.timeout(RELAY_TIMEOUT_SECONDS):
            await publish_deletion(client, prefix, row["user_id"], row["deleted_at"])
        await db.execute(
            "UPDATE account_deletions SET published_at = now() WHERE user_id = $1",
            row["user_id"],
        )
        _log.info("account_deletion_published", user_id=str(row["user_id"]))
    return len(rows)


async def relay_forever(db: Database, redis_url: str, prefix: str) -> None:
    """Publish pending deletions until cancelled, every `RELAY_IDLE_SECONDS` when idle; an
    outage of Postgres or Redis is logged once and retried."""
    client = redis.Redis.from_url(
        redis_url,
        socket_timeout=RELAY_TIMEOUT_SECONDS,
        socket_connect_timeout=RELAY_TIMEOUT_SECONDS,
    )
    failures = OutageLog("account_deletion_relay_failed", "account_deletion_relay_recovered")
    try:
        while True:
            try:
                await publish_pending(db, client, prefix)
                failures.succeeded()
            except (
                DatabaseUnavailable,
                asyncpg.PostgresError,
                redis.RedisError,
                TimeoutError,
            ) as exc:
                failures.failed(type(exc).__name__)
            await asyncio.sleep(RELAY_IDLE_SECONDS)
    finally:
        await client.aclose()
