"""Listing ended sessions in the revoked-session set that the API checks.

See ``bulwark.common.revocations`` for the set itself.

Postgres is the record: a session has ended once its transaction commits. Redis is a cache of
the sessions ended in the last `entry_lifetime` seconds, written:

- right after the commit and before the answer (`publish`), so the session's access tokens
  fail at the API as soon as the client learns of the logout; when that write fails, the
  set's completeness marker is deleted, so the API applies ``REVOCATION_FAILURE_MODE``
  instead of trusting a set that misses the session;
- in full by every replica (`resync_forever`): every ``REVOCATION_RESYNC_SECONDS``, and at
  once when the marker is gone (Redis restarted empty or was flushed, or a publication
  failed) or has gone back to an epoch lower than one this replica wrote or saw (Redis came
  back from a snapshot or failed over to a replica that lags); then the marker is written
  again with an epoch past every earlier one. The marker is checked every
  `MARKER_CHECK_SECONDS`, so the API refuses no valid token for much longer than that once
  Redis is back.

Signing keys that left the key folder are part of the set too (``revoked:kid:<kid>``); the
rebuild lists again those removed within `entry_lifetime` (``recent_kids``).
"""

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterable, Sequence

from bulwark.auth.sessions import queries
from bulwark.common.db import Database, DatabaseUnavailable
from bulwark.common.logging import get_logger
from bulwark.common.outages import OutageLog
from bulwark.common.revocations import RevocationsUnavailable, SessionRevocations, entry_lifetime

_log = get_logger(__name__)
#: How often each replica checks the completeness marker, in seconds.
MARKER_CHECK_SECONDS = 0.5
#: Signing keys removed lately: ``(kid, seconds its entry must still live)``.
RecentKids = Callable[[], Sequence[tuple[str, int]]]


async def publish(
    revocations: SessionRevocations, access_token_ttl: int, family_ids: Iterable[uuid.UUID]
) -> None:
    """List the sessions ``family_ids`` (already ended in Postgres) as revoked.

    Never raises for Redis: the session has ended in Postgres whatever happens here. A
    failure is logged (``session_revocation_unpublished``) and the set is marked incomplete
    (when Redis still takes that), so the API applies its failure mode rather than accept
    the session's tokens; `resync_forever` lists the session again.
    """
    ids = list(family_ids)
    if not ids:
        return
    lifetime = entry_lifetime(access_token_ttl)
    try:
        await revocations.revoke([(family_id, lifetime) for family_id in ids])
    except RevocationsUnavailable as exc:
        _log.error("session_revocation_unpublished", sessions=len(ids), error=str(exc))
        # When Redis answers no one, the API's checks fail too and its failure mode applies.
        with contextlib.suppress(RevocationsUnavailable):
            await revocations.mark_incomplete()


async def rebuild(
    db: Database,
    revocations: SessionRevocations,
    access_token_ttl: int,
    recent_kids: RecentKids = lambda: (),
) -> int:
    """List again every session ended within `entry_lifetime` (each for what remains of it)
    and every recently removed signing key, then mark the set complete; return how many
    sessions.

    Raises:
        RevocationsUnavailable: Redis failed or timed out (the marker is not written).
        DatabaseUnavailable: the database failed.
    """
    lifetime = entry_lifetime(access_token_ttl)
    rows = await queries.recently_revoked(db, lifetime)
    await revocations.revoke([(row["id"], lifetime - int(row["age"])) for row in rows])
    for kid, seconds in recent_kids():
        await revocations.revoke_signing_keys([kid], seconds)
    await revocations.mark_complete()
    return len(rows)


async def resync_forever(
    db: Database,
    revocations: SessionRevocations,
    *,
    access_token_ttl: int,
    interval_seconds: float,
    recent_kids: RecentKids = lambda: (),
) -> None:
    """`rebuild` every ``interval_seconds``, and within `MARKER_CHECK_SECONDS` of the marker
    going missing, until cancelled; failures are logged (``session_revocation_resync_failed``)
    and retried at the next check."""
    loop = asyncio.get_running_loop()
    next_rebuild = loop.time()
    outage = OutageLog("session_revocation_resync_failed", "session_revocation_resync_recovered")
    while True:
        try:
            current = await revocations.is_current()
            if not current or loop.time() >= next_rebuild:
                count = await rebuild(db, revocations, access_token_ttl, recent_kids)
                if not current:  # Redis lost revocations: say so, whatever the schedule
                    _log.warning("revocation_set_rebuilt", sessions=count)
                next_rebuild = loop.time() + interval_seconds
            outage.succeeded()
        except (RevocationsUnavailable, DatabaseUnavailable) as exc:
            outage.failed(type(exc).__name__)
        except Exception:  # noqa: BLE001  # the loop must outlive any one failure; logged
            _log.exception("session_revocation_resync_failed")
        await asyncio.sleep(MARKER_CHECK_SECONDS)
