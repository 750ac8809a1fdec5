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
they see one server even behind a load balancer of several replicas.

Staleness is bounded for everyone: `PrimaryPositions` samples the primary's position every
second, and every replica read also requires the position the primary had
``REPLICA_MAX_LAG_SECONDS`` ago. So other users' writes (and anything written outside the
API) appear late by at most that bound (plus the sampling second); a replica lagging more,
stalled or cut off from the primary while still answering, sends every read to the
primary. Limits, stated rather than hidden:

- ``READ_YOUR_WRITES_SECONDS`` must outlast the lag bound (the settings check it), so a
  writer's position is kept until the bound covers it;
- when Redis or the primary fails between a write's commit and the recording of its
  position, the write still answers its success (a retried create without an
  ``Idempotency-Key`` would duplicate the note) and the failure is logged once per
  outage; that one write may be missing from its writer's reads for up to the lag bound;
- when Redis cannot tell a user's position, the read goes to the primary (safe).

A replica that fails (down, stalled, refusing connections, a lost connection) does not fail
the read: it is retried on the primary, which has every row the replica has. A dead replica
is not hidden: its pool logs one warning per outage (``database_unavailable``, pool
``replica``), each read sent to the primary instead is counted in
``bulwark_db_replica_fallbacks_total{reason}``, and for `REPLICA_RETRY_SECONDS` after a
failure reads skip the replica (so a stalled replica costs one timeout per process per
period, not one per read). ``/readyz`` does not check the replica: the API serves without it.
"""

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from bulwark.api.write_positions import WritePositions, WritePositionsUnavailable
from bulwark.common.db import Database, DatabaseUnavailable, Queryable
from bulwark.common.metrics import ReplicaFallbackReason, count_replica_fallback
from bulwark.common.outages import OutageLog

#: Seconds reads skip the replica after it failed, before trying it again.
REPLICA_RETRY_SECONDS = 5.0
#: Seconds between two samples of the primary's WAL position (`PrimaryPositions`).
SAMPLE_SECONDS = 1.0
T = TypeVar("T")
_REPLAYED = "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)"


class PrimaryPositions:
    """The primary's WAL insert position, sampled every `SAMPLE_SECONDS` (`sample_forever`).

    `floor` is the newest sample at least ``max_lag_seconds`` old: a replica that has not
    replayed it lags by more than ``max_lag_seconds``. An idle primary's position does not
    move, so an idle replica is never taken for a lagging one.
    """

    def __init__(self, primary: Database, max_lag_seconds: float) -> None:
        self._primary = primary
        self._max_lag = max_lag_seconds
        self._samples: deque[tuple[float, int]] = deque()  # (monotonic seconds, LSN), oldest first

    def floor(self) -> int | None:
        """The position every replica read requires, or None before the first old-enough
        sample (the first ``max_lag_seconds`` after start)."""
        cutoff = time.monotonic() - self._max_lag
        floor = None
        for taken, lsn in self._samples:
            if taken > cutoff:
                break
            floor = lsn
        return floor

    async def sample(self) -> None:
        """Take one sample.

        Raises:
            DatabaseUnavailable: the primary did not answer within its timeout.
        """
        lsn: int = await self._primary.fetchval("SELECT pg_current_wal_insert_lsn()")
        now = time.monotonic()
        self._samples.append((now, lsn))
        # Keep the newest sample older than the bound, and every newer one.
        while len(self._samples) > 1 and self._samples[1][0] <= now - self._max_lag:
            self._samples.popleft()

    async def sample_forever(self) -> None:
        """Sample every `SAMPLE_SECONDS` until cancelled; a primary outage skips samples (it is
        logged by the primary's pool), and the floor then stays where it was."""
        while True:
            with contextlib.suppress(DatabaseUnavailable):
                await self.sample()
            await asyncio.sleep(SAMPLE_SECONDS)


class NotesDatabases:
    """The primary, and optionally a read replica with each user's last write position.

    Args:
        primary: the request pool of ``DATABASE_URL``.
        replica: the pool of ``DATABASE_READ_URL``, or None (everything on the primary).
        positions: where write positions are kept; required with a replica.
        max_lag_seconds: the staleness bound of replica reads (``REPLICA_MAX_LAG_SECONDS``).

    With a replica, `start` begins sampling the primary's position in a task of its own and
    `aclose` ends it.
    """

    def __init__(
        self,
        primary: Database,
        replica: Database | None,
        positions: WritePositions | None,
        *,
        max_lag_seconds: float = 10.0,
    ) -> None:
        if replica is not None and positions is None:
            raise ValueError("a replica needs write positions for read-your-writes")
        self.primary, self.replica, self.positions = primary, replica, positions
        self.primary_positions = PrimaryPositions(primary, max_lag_seconds)
        self._sampler: asyncio.Task[None] | None = None
        self._skip_replica_until = 0.0
        self._unrecorded = OutageLog("write_position_unrecorded", "write_position_recorded")

    def start(self) -> None:
        """Begin sampling the primary's position (with a replica; in the running loop)."""
        if self.replica is not None and self._sampler is None:
            self._sampler = asyncio.create_task(
                self.primary_positions.sample_forever(), name="primary-positions"
            )

    async def aclose(self) -> None:
        """Stop sampling (the pools are closed by their owner)."""
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler

    async def write(self, user_id: str, statement: Callable[[Database], Awaitable[T]]) -> T:
        """Run ``statement`` (one statement, or a transaction it opens) on the primary; with a
        replica, then keep the primary's WAL position for ``user_id`` so their next reads
        see this write.

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
        """Run ``query`` on the replica when it has replayed ``user_id``'s last write (if
        they made one recently) and lags by less than the bound, else, or when the replica
        fails, on the primary.

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
        required = max(
            (p for p in (position, self.primary_positions.floor()) if p is not None),
            default=None,
        )
        try:
            async with replica.connection() as conn:
                if required is None or await conn.fetchval(_REPLAYED, required):
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
