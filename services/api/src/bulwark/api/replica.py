"""Where the API's queries run: the primary, or a streaming read replica (``DATABASE_READ_URL``).

`NotesDatabases.write` runs a statement on the primary; `NotesDatabases.read` runs a read on
the replica when one is configured and that is safe, else on the primary. Reads that decide a
write (an ownership check, an idempotency lookup) are part of the write and use ``write``.

Read-your-writes: a user never misses a note they have just created or updated, nor sees one
they have just deleted, from any of their devices. After each write, the primary's WAL
insert position (``pg_current_wal_insert_lsn()``, taken after the commit, so at or past the
commit record) is kept for the writer in Redis for ``READ_YOUR_WRITES_SECONDS``
(`bulwark.api.write_positions`). A read of that user checks, on the replica connection that
will run it, ``pg_last_wal_replay_lsn()`` against it: replayed that far, the read stays
there; behind, it goes to the primary. The check and the read share one connection, so
they see one server even behind a load balancer of several replicas. Users with no recent
write read the replica without a check: other users' writes (and anything written outside
the API) may appear late, by the replica's lag. Limits, stated rather than hidden:

- a replica lagging by more than ``READ_YOUR_WRITES_SECONDS`` would outlive the kept
  position; alert on replica lag well below it;
- when Redis or the primary fails between a write's commit and the recording of its
  position, the write still answers its success (a retried create would duplicate the
  note) and the failure is logged once per outage; that one write may show up on the
  replica after its lag;
- when Redis cannot tell a user's position, the read goes to the primary (safe).

A replica that fails (down, stalled, refusing connections, a lost connection) does not fail
the read: it is retried on the primary, which has every row the replica has. A dead replica
is not hidden: its pool logs one warning per outage (``database_unavailable``, pool
``replica``), each read sent to the primary instead is counted in
``bulwark_db_replica_fallbacks_total{reason}``, and for `REPLICA_RETRY_SECONDS` after a
failure reads skip the replica (so a stalled replica costs one timeout per process per
period, not one per read). ``/readyz`` does not check the replica: the API serves without it.
"""

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from bulwark.api.write_positions import WritePositions, WritePositionsUnavailable
from bulwark.common.db import Database, DatabaseUnavailable, Queryable
from bulwark.common.metrics import ReplicaFallbackReason, count_replica_fallback
from bulwark.common.outages import OutageLog

#: Seconds reads skip the replica after it failed, before trying it again.
REPLICA_RETRY_SECONDS = 5.0
T = TypeVar("T")
_REPLAYED = "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)"


class NotesDatabases:
    """The primary, and optionally a read replica with each user's last write position.

    Args:
        primary: the request pool of ``DATABASE_URL``.
        replica: the pool of ``DATABASE_READ_URL``, or None (everything on the primary).
        positions: where write positions are kept; required with a replica.
    """

    def __init__(
        self,
        primary: Database,
        replica: Database | None,
        positions: WritePositions | None,
    ) -> None:
        if replica is not None and positions is None:
            raise ValueError("a replica needs write positions for read-your-writes")
        self.primary, self.replica, self.positions = primary, replica, positions
        self._skip_replica_until = 0.0
        self._unrecorded = OutageLog("write_position_unrecorded", "write_position_recorded")

    async def write(self, user_id: str, statement: Callable[[Queryable], Awaitable[T]]) -> T:
        """Run ``statement`` on the primary; with a replica, then keep the primary's WAL
        position for ``user_id`` so their next reads see this write.

        Raises:
            DatabaseUnavailable: the primary failed during ``statement`` (503).
        """
        result = await statement(self.primary)
        if self.positions is not None:
            try:
                lsn: int = await self.primary.fetchval("SELECT pg_current_wal_insert_lsn()")
                await self.positions.record(user_id, lsn)
            except (DatabaseUnavailable, WritePositionsUnavailable) as exc:
                # Committed: answering an error would make the client repeat it.
                self._unrecorded.failed(type(exc).__name__)
            else:
                self._unrecorded.succeeded()
        return result

    async def read(self, user_id: str, query: Callable[[Queryable], Awaitable[T]]) -> T:
        """Run ``query`` on the replica when it has replayed ``user_id``'s last write (or
        they made none recently), else, or when the replica fails, on the primary.

        Raises:
            DatabaseUnavailable: the primary failed, where the read had to run (503).
        """
        replica, positions = self.replica, self.positions
        if replica is None or positions is None:
            return await query(self.primary)
        if time.monotonic() < self._skip_replica_until:
            return await self._on_primary("replica_unavailable", query)
        try:
            position = await positions.last(user_id)
        except WritePositionsUnavailable:
            return await self._on_primary("positions_unavailable", query)
        try:
            async with replica.connection() as conn:
                if position is None or await conn.fetchval(_REPLAYED, position):
                    return await query(conn)
        except DatabaseUnavailable:
            # Logged once per outage and counted by the replica's pool; retried below.
            self._skip_replica_until = time.monotonic() + REPLICA_RETRY_SECONDS
            return await self._on_primary("replica_unavailable", query)
        except asyncpg.TransactionRollbackError:
            # SQLSTATE 40001 "conflict with recovery": the standby's replay cancelled the
            # read (max_standby_streaming_delay). The primary has the rows; not an outage.
            pass
        return await self._on_primary("replica_behind", query)

    async def _on_primary(
        self, reason: ReplicaFallbackReason, query: Callable[[Queryable], Awaitable[T]]
    ) -> T:
        count_replica_fallback(reason)
        return await query(self.primary)
