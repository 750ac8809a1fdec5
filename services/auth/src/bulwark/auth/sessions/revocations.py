"""Listing ended sessions in the revoked-session set that the API checks.

See ``bulwark.common.revocations`` for the set itself.

Postgres is the record: a session has ended once its transaction commits. Redis is a cache of
the sessions ended in the last `entry_lifetime` seconds, written twice:

- right after the commit and before the answer (`publish`), so the session's access tokens
  fail at the API as soon as the client learns of the logout;
- every ``REVOCATION_RESYNC_SECONDS`` by every replica (`resync_forever`), so a write lost
  to a Redis outage, or keys lost to a Redis restart, are listed again within that interval.
"""

import asyncio
import uuid
from collections.abc import Iterable

from bulwark.auth.sessions import queries
from bulwark.common.db import Database
from bulwark.common.logging import get_logger
from bulwark.common.revocations import RevocationsUnavailable, SessionRevocations, entry_lifetime

_log = get_logger(__name__)


async def publish(
    revocations: SessionRevocations, access_token_ttl: int, family_ids: Iterable[uuid.UUID]
) -> None:
    """List the sessions ``family_ids`` (already ended in Postgres) as revoked.

    Never raises for Redis: the session has ended in Postgres whatever happens here, so a
    failure is logged (``session_revocation_unpublished``) and left to `resync_forever`; the
    session's access tokens keep working at the API until then.
    """
    ids = list(family_ids)
    if not ids:
        return
    lifetime = entry_lifetime(access_token_ttl)
    try:
        await revocations.revoke([(family_id, lifetime) for family_id in ids])
    except RevocationsUnavailable as exc:
        _log.error("session_revocation_unpublished", sessions=len(ids), error=str(exc))


async def republish_recent(
    db: Database, revocations: SessionRevocations, access_token_ttl: int
) -> int:
    """List again every session ended within `entry_lifetime`, each for what remains of it;
    return how many.

    Raises:
        RevocationsUnavailable: Redis failed or timed out.
        asyncpg.PostgresError, OSError: the database failed.
    """
    lifetime = entry_lifetime(access_token_ttl)
    rows = await queries.recently_revoked(db, lifetime)
    await revocations.revoke([(row["id"], lifetime - int(row["age"])) for row in rows])
    return len(rows)


async def resync_forever(
    db: Database,
    revocations: SessionRevocations,
    *,
    access_token_ttl: int,
    interval_seconds: float,
) -> None:
    """Run `republish_recent` every ``interval_seconds`` until cancelled; failures are
    logged (``session_revocation_resync_failed``) and retried at the next interval."""
    while True:
        try:
            await republish_recent(db, revocations, access_token_ttl)
        except RevocationsUnavailable as exc:
            _log.warning("session_revocation_resync_failed", error=str(exc))
        except Exception:  # noqa: BLE001  # the loop must outlive any one failure; logged
            _log.exception("session_revocation_resync_failed")
        await asyncio.sleep(interval_seconds)
