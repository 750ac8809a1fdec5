"""Deleting what can no longer be used: device authorizations, authorization codes, page
sign-ins and mailed account tokens an hour past their expiry (the hour keeps an expired code
answering ``expired_token`` rather than ``invalid_grant`` for a while, and a replayed
authorization code able to end its session); and deleted accounts' tombstones once their
sessions' last access token has expired (docs/account.md)."""

import asyncio

import asyncpg

from bulwark.auth.account import queries as account_queries
from bulwark.common.db import Database, DatabaseUnavailable, Queryable
from bulwark.common.outages import OutageLog

SWEEP_SECONDS = 60.0
#: Most rows deleted per table and statement.
SWEEP_BATCH = 1000
#: Each swept table and its primary key.
_KEYS = {
    "device_authorizations": "device_code_hash",
    "authorization_codes": "code_hash",
    "page_sessions": "token_hash",
    "account_tokens": "token_hash",
}


async def purge_expired(db: Queryable, limit: int = SWEEP_BATCH) -> int:
    """Delete up to ``limit`` rows per table that expired over an hour ago; return how many
    rows were deleted in all.

    Raises:
        DatabaseUnavailable: the database failed.
    """
    deleted = 0
    for table, key in _KEYS.items():
        status: str = await db.execute(
            f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table}"  # noqa: S608  # constant names
            " WHERE expires_at < now() - interval '1 hour' LIMIT $1 FOR UPDATE SKIP LOCKED)",
            limit,
        )
        deleted += int(status.rsplit(maxsplit=1)[-1])
    return deleted


async def sweep_forever(db: Database, *, tombstone_seconds: int) -> None:
    """Every `SWEEP_SECONDS`, `purge_expired` and delete tombstones older than
    ``tombstone_seconds``, until cancelled; a failing sweep (database down, schema not
    migrated yet) is logged once per outage and retried next period."""
    failures = OutageLog("oauth_sweep_failed", "oauth_sweep_recovered")
    while True:
        try:
            await purge_expired(db)
            await account_queries.purge_tombstones(db, tombstone_seconds, SWEEP_BATCH)
        except (DatabaseUnavailable, asyncpg.PostgresError) as exc:
            failures.failed(type(exc).__name__)
        else:
            failures.succeeded()
        await asyncio.sleep(SWEEP_SECONDS)
