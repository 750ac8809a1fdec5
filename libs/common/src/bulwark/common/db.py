"""Postgres access: the request pool with every wait bounded.

`Database` is the only way request code reaches Postgres. It holds one asyncpg pool and
keeps three promises, on every path (a sibling's exception, a client that goes away, a
cancelled task, a timeout):

- a connection is taken only inside ``async with db.transaction()`` (or ``db.connection()``,
  or one of the single-statement helpers) and given back when that block ends, however it
  ends; no Litestar dependency holds one, so a request refused by authentication or a rate
  limit never takes a connection at all;
- no task holds two connections of one pool at once (that would deadlock once every
  connection is held by a task waiting for a second one): a nested acquire raises
  `NestedAcquireError`, a bug the tests catch;
- no wait is unbounded: taking a connection waits at most ``timeout_seconds``, and so does
  each statement (client side, and ``statement_timeout`` on the server). An exhausted pool
  or a database that is down, restarting or stalled answers `DatabaseUnavailable` (503 with
  ``Retry-After``), logged once per outage (``bulwark.common.outages``), not per request.

Postgres backs this up: ``idle_in_transaction_session_timeout`` ends a session left idle in a
transaction by anything that slipped past the above.

Behind PgBouncer in transaction pooling (``pool_mode="transaction"``, ``DATABASE_POOL_MODE``),
a server connection is ours only for one transaction, so nothing may rest on the session:
PgBouncer refuses (or, told to ignore them, drops) the timeouts as startup parameters, and
before 1.21 (Debian bookworm ships 1.18) it cannot carry prepared statements from one
transaction to the next. In that mode asyncpg's statement cache is off, every block (the
single-statement helpers included) runs in a transaction, and each transaction sets both
timeouts with ``set_config(..., is_local => true)``, which end with it.

Nothing here leaves state on a session (the timeouts are set at connect, or per transaction;
no ``LISTEN``, no cursor, no session advisory lock, no ``SET`` without ``LOCAL``), so a
released connection is not sent asyncpg's reset query (``RESET ALL``, ``UNLISTEN *``,
``CLOSE ALL``, ``pg_advisory_unlock_all()``): that was one more round trip per request for
nothing (`SessionlessConnection`). asyncpg still rolls back a transaction left open.

Migrations are applied by their own command, never by a serving process
(``bulwark.common.migrations``).
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, Literal

import asyncpg
import asyncpg.exceptions

from bulwark.common.logging import get_logger
from bulwark.common.metrics import (
    DatabaseUnavailableReason,
    count_database_unavailable,
    observe_pool,
    unobserve_pool,
)
from bulwark.common.outages import OutageLog
from bulwark.common.problems import ServiceUnavailable

_log = get_logger(__name__)
#: ``Retry-After`` of a `DatabaseUnavailable` answer, in seconds.
RETRY_AFTER_SECONDS = 2
#: Failures that mean the database cannot answer now (down, restarting, stalled, out of
#: connections), as opposed to a bug or a refused value: the request gets a 503.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable
    TimeoutError,  # connect, acquire or statement took longer than the timeout
    asyncpg.exceptions.PostgresConnectionError,  # the connection was lost mid-call
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting, query cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
)


def _lost(exc: BaseException, conn: asyncpg.Connection) -> bool:
    """True when ``exc`` means the database or this connection is gone, not a bug: an outage
    error, or asyncpg's interface errors on a connection that was closed under it (a
    server shutdown it learns of at the next call: "another operation is in progress")."""
    if isinstance(exc, OUTAGE_ERRORS):
        return True
    interface = (asyncpg.exceptions.InterfaceError, asyncpg.exceptions.InternalClientError)
    if not isinstance(exc, interface):
        return False
    chained = exc.__cause__ or exc.__context__
    return _is_closed(conn) or (chained is not None and _lost(chained, conn))


def _is_closed(conn: asyncpg.Connection) -> bool:
    """True when ``conn`` (a pool's proxy) is closed, or was lost and already taken back.

    asyncpg gives a connection lost while checked out (the server ended it, or went away)
    back to its pool at once, before the task using it sees the error, and the pool's proxy
    then refuses every call, ``is_closed()`` and ``terminate()`` included, with
    InterfaceError ("connection has been released back to the pool"). Only a detached proxy
    raises here.
    """
    try:
        closed: bool = conn.is_closed()
    except asyncpg.exceptions.InterfaceError:
        return True
    return closed


def _terminate(conn: asyncpg.Connection) -> None:
    """Close ``conn`` at once without a word to the server, unless it is already gone (a
    connection its pool took back is closed; see `_is_closed`)."""
    if not _is_closed(conn):
        conn.terminate()


class DatabaseUnavailable(ServiceUnavailable):
    """503 with ``Retry-After``: the database did not answer in time, or every pooled
    connection stayed busy for the whole wait."""

    def __init__(self) -> None:
        super().__init__(
            "The service is temporarily unavailable; retry shortly.",
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
        )


class NestedAcquireError(RuntimeError):
    """A task asked for a second connection of a pool while holding one (a bug: under load,
    every connection could be held by a task waiting for another, and none would return)."""


Connection = asyncpg.Connection
Record = asyncpg.Record
#: How the connections reach Postgres: directly or through a session pooler (``session``), or
#: through a transaction pooler such as PgBouncer's ``pool_mode = transaction``.
PoolMode = Literal["session", "transaction"]
POOL_MODES: tuple[PoolMode, ...] = ("session", "transaction")

# The timeouts of one transaction, for a transaction pooler (`Database.pool_mode`).
_SET_LOCAL_TIMEOUTS = (
    "SELECT set_config('statement_timeout', $1, true),"
    " set_config('idle_in_transaction_session_timeout', $2, true)"
)


def _session_timeouts(timeout_seconds: float) -> dict[str, str]:
    """``statement_timeout`` and ``idle_in_transaction_session_timeout`` (milliseconds, as
    text) for a pool whose waits are bounded by ``timeout_seconds``."""
    timeout_ms = int(timeout_seconds * 1000)
    return {
        "statement_timeout": str(timeout_ms),
        "idle_in_transaction_session_timeout": str(max(10_000, 3 * timeout_ms)),
    }


class Database:
    """One service's connection pool, with bounded waits and one connection per task.

    Args:
        pool: an open asyncpg pool (see `open_database`).
        timeout_seconds: the longest wait for a connection, and for each statement.
        name: names the pool in logs and metrics (``request``, ``detectors``).
        pool_mode: ``transaction`` behind a transaction pooler (see the module's docstring):
            `connection` then also runs its block in a transaction, and every transaction
            sets the timeouts itself.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        timeout_seconds: float,
        name: str,
        pool_mode: PoolMode = "session",
    ) -> None:
        self.pool = pool
        self.timeout_seconds = timeout_seconds
        self.name = name
        self.pool_mode = pool_mode
        self._holder: ContextVar[asyncio.Task[Any] | None] = ContextVar(
            f"bulwark_db_holder_{name}", default=None
        )
        self._unreachable = OutageLog("database_unavailable", "database_recovered", {"pool": name})
        self._exhausted = OutageLog(
            "database_pool_exhausted", "database_pool_recovered", {"pool": name}
        )

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection outside any transaction (each statement commits alone; with
        ``pool_mode="transaction"``, inside one, as `transaction`), released when the block
        ends on any path.

        Raises:
            DatabaseUnavailable: no connection within the timeout (pool exhausted, or the
                database down or stalled), or the connection failed in the block (503).
            NestedAcquireError: this task already holds a connection of this pool.
        """
        task = asyncio.current_task()
        if task is not None and self._holder.get() is task:
            raise NestedAcquireError(f"this task already holds a {self.name} connection")
        conn = await self._acquire()
        held = self._holder.set(task)
        try:
            if self.pool_mode == "transaction":
                async with self._transaction(conn):
                    yield conn
            else:
                yield conn
        except asyncio.CancelledError:
            # Cancelled mid-call (a deadline, a shutdown): the connection's state is unknown,
            # and a graceful reset would wait on a server that may be stalled. Terminate it;
            # the server rolls back what it had.
            _terminate(conn)
            raise
        except Exception as exc:
            if not _lost(exc, conn):
                raise
            # A connection that failed mid-call is not reused: the server rolls back what
            # it had when the connection ends.
            _terminate(conn)
            self._outage("unreachable", type(exc).__name__)
            raise DatabaseUnavailable from None
        finally:
            self._holder.reset(held)
            # Bounded: asyncpg resets the connection within the acquire timeout. A reset that
            # fails (the server went away after the block's work was done) has terminated
            # the connection; the block's outcome stands.
            with contextlib.suppress(Exception):
                await self.pool.release(conn)
        self._unreachable.succeeded()
        self._exhausted.succeeded()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection inside a transaction that commits when the block ends
        normally and rolls back when it raises (cancellation included), so a failed request
        writes nothing; the connection is released on every path.

        Raises:
            DatabaseUnavailable, NestedAcquireError: as `connection`.
        """
        if self.pool_mode == "transaction":
            async with self.connection() as conn:  # already in a transaction
                yield conn
            return
        async with self.connection() as conn, self._transaction(conn):
            yield conn

    @asynccontextmanager
    async def _transaction(self, conn: asyncpg.Connection) -> AsyncIterator[None]:
        """Run the block in a transaction on ``conn``: commit when it ends normally, roll
        back when it raises (not on a cancelled or lost connection, which is terminated)."""
        transaction = conn.transaction()
        await transaction.start()
        try:
            if self.pool_mode == "transaction":
                timeouts = _session_timeouts(self.timeout_seconds)
                await conn.execute(_SET_LOCAL_TIMEOUTS, *timeouts.values())
            yield
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError) and not _lost(exc, conn):
                await transaction.rollback()
            raise
        await transaction.commit()

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        """Run one statement on a pooled connection and return its rows (see `connection`)."""
        async with self.connection() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(query, *args)
            return rows

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record | None:
        """Run one statement and return its first row, or None (see `connection`)."""
        async with self.connection() as conn:
            row: asyncpg.Record | None = await conn.fetchrow(query, *args)
            return row

    async def fetchval(self, query: str, *args: object) -> Any:
        """Run one statement and return the first column of its first row (see
        `connection`)."""
        async with self.connection() as conn:
            return await conn.fetchval(query, *args)

    async def execute(self, query: str, *args: object) -> str:
        """Run one statement and return its status (``INSERT 0 1``; see `connection`)."""
        async with self.connection() as conn:
            status: str = await conn.execute(query, *args)
            return status

    async def ensure_ready(self) -> None:
        """Raise unless the database answers ``SELECT 1`` within the timeout (``/readyz``).

        Raises:
            ServiceUnavailable: any failure (503; the body names nothing internal).
        """
        try:
            async with asyncio.timeout(self.timeout_seconds):
                await self.fetchval("SELECT 1")
        except Exception:  # noqa: BLE001  # any failure means not ready
            raise ServiceUnavailable("The database is not reachable.") from None

    async def close(self) -> None:
        """Close every connection (waiting at most the timeout for those in use)."""
        unobserve_pool(self.name)
        try:
            async with asyncio.timeout(self.timeout_seconds):
                await self.pool.close()
        except TimeoutError:
            self.pool.terminate()

    async def _acquire(self) -> asyncpg.Connection:
        pool = self.pool
        # Every connection was checked out when the wait began: a timeout is then the pool's
        # size, not the database (which may be fine, only slow for the holders).
        full = pool.get_idle_size() == 0 and pool.get_size() >= pool.get_max_size()
        try:
            conn: asyncpg.Connection = await pool.acquire(timeout=self.timeout_seconds)
        except TimeoutError:
            if full:
                self._outage("pool_exhausted", "pool_exhausted")
            else:
                self._outage("unreachable", "TimeoutError")
            raise DatabaseUnavailable from None
        except Exception as exc:  # noqa: BLE001  # any failure to connect is an outage to us
            self._outage("unreachable", type(exc).__name__)
            raise DatabaseUnavailable from None
        return conn

    def _outage(self, kind: DatabaseUnavailableReason, reason: str) -> None:
        (self._exhausted if kind == "pool_exhausted" else self._unreachable).failed(reason)
        count_database_unavailable(self.name, kind)


class SessionlessConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg is untyped
    """An asyncpg connection released to its pool without the reset query (see the module
    docstring): code that sets session state must not use this pool."""

    def get_reset_query(self) -> str:
        """No reset query (asyncpg >= 0.30 sends what this returns on every release)."""
        return ""


#: What a query function runs on: a connection (inside a transaction the caller opened), or
#: the `Database` itself for a single statement on a connection taken just for it.
Queryable = asyncpg.Connection | Database


async def open_database(
    dsn: str,
    *,
    name: str = "request",
    max_size: int = 10,
    timeout_seconds: float = 3.0,
    pool_mode: PoolMode = "session",
) -> Database:
    """Open a pool of at most ``max_size`` connections to ``dsn`` (``postgresql://...``).

    Every session gets ``statement_timeout`` = ``timeout_seconds``,
    ``idle_in_transaction_session_timeout`` = the larger of 10 s and three times the timeout,
    and UTC; connecting, waiting for a connection and each statement are bounded by
    ``timeout_seconds`` on the client side too. With ``pool_mode="transaction"`` (``dsn``
    names a transaction pooler) the timeouts are set in each transaction instead, and
    asyncpg keeps no prepared statements.

    Raises:
        OSError, TimeoutError, asyncpg.PostgresError: the server cannot be reached in time
            or refuses the login.
    """
    pooled = pool_mode == "transaction"
    timeouts = {} if pooled else _session_timeouts(timeout_seconds)
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        # No floor: asyncpg would reconnect to it in the background during an outage and log
        # a traceback each second. Connections open on demand and idle ones are kept.
        min_size=0,
        max_size=max_size,
        timeout=timeout_seconds,  # connecting
        command_timeout=timeout_seconds,
        # PgBouncer passes TimeZone on (it tracks it per client) but refuses the timeouts.
        server_settings={**timeouts, "timezone": "UTC"},
        connection_class=SessionlessConnection,
        **({"statement_cache_size": 0} if pooled else {}),
    )
    database = Database(pool, timeout_seconds=timeout_seconds, name=name, pool_mode=pool_mode)
    observe_pool(name, lambda: (pool.get_size() - pool.get_idle_size(), pool.get_idle_size()))
    return database
