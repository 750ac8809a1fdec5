"""`bulwark.common.db.Database` against a real Postgres: every path gives its connection back,
no task holds two, and database failures become `DatabaseUnavailable` (503)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from bulwark.common.db import Database, DatabaseUnavailable, NestedAcquireError, open_database
from bulwark.common.problems import NotFound


async def _open(url: str, size: int = 2, seconds: float = 0.5) -> Database:
    return await open_database(url, name="test", max_size=size, timeout_seconds=seconds)


def _in_use(db: Database) -> int:
    return int(db.pool.get_size() - db.pool.get_idle_size())


async def test_a_task_never_holds_two_connections(database_server_url: str) -> None:
    db = await _open(database_server_url)
    try:
        async with db.transaction():
            with pytest.raises(NestedAcquireError):
                await db.fetchval("SELECT 1")
        assert _in_use(db) == 0
        # Another task may take one while this one holds one.
        async with db.connection():
            assert await asyncio.create_task(db.fetchval("SELECT 2")) == 2
    finally:
        await db.close()


async def test_a_failed_block_rolls_back_and_gives_the_connection_back(
    database_server_url: str,
) -> None:
    db = await _open(database_server_url)
    try:

        async def refused() -> None:
            async with db.transaction() as conn:
                await conn.execute("SELECT 1")
                raise NotFound

        with pytest.raises(NotFound):
            await refused()
        assert _in_use(db) == 0

        async def stuck() -> None:
            async with db.transaction() as conn:
                await conn.execute("SELECT pg_sleep(0.3)")

        task = asyncio.create_task(stuck())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _in_use(db) == 0
    finally:
        await db.close()


@pytest.mark.security(stride="D", asvs=("V16.5",))
async def test_a_stalled_statement_and_an_exhausted_pool_are_503s_within_the_timeout(
    database_server_url: str,
) -> None:
    db = await _open(database_server_url, size=1, seconds=0.3)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(DatabaseUnavailable) as slow:
            await db.fetchval("SELECT pg_sleep(5)")
        assert loop.time() - started < 1.5
        assert slow.value.status == 503
        assert slow.value.headers["Retry-After"]
        assert _in_use(db) == 0

        async def hold() -> None:
            async with db.connection():
                await asyncio.sleep(1)

        holder = asyncio.create_task(hold())
        await asyncio.sleep(0.05)
        started = loop.time()
        with pytest.raises(DatabaseUnavailable):
            await db.fetchval("SELECT 1")  # the only connection is held
        assert loop.time() - started < 1.0
        await holder
        assert await db.fetchval("SELECT 1") == 1
    finally:
        await db.close()


async def test_a_release_costs_no_round_trip_and_still_ends_an_open_transaction(
    database_server_url: str,
) -> None:
    """Issue 11: asyncpg's reset query (RESET ALL, UNLISTEN *, ...) was one more round trip
    per request; nothing of ours leaves session state, so none is sent. A transaction left
    open is still rolled back before another request gets the connection."""
    db = await _open(database_server_url, size=1)
    sent: list[str] = []
    try:
        async with db.connection() as conn:
            conn.add_query_logger(lambda record: sent.append(record.query))
            assert await conn.fetchval("SELECT 1") == 1
        assert sent == ["SELECT 1"]  # and nothing at release

        conn = await db.pool.acquire()
        await conn.execute("BEGIN")
        await conn.execute("CREATE TEMPORARY TABLE left_open (n int)")
        await db.pool.release(conn)
        async with db.connection() as again:
            assert not again.is_in_transaction()
            assert await again.fetchval("SELECT to_regclass('pg_temp.left_open')") is None
    finally:
        await db.close()


async def _end_backend_of(url: str, conn: asyncpg.Connection) -> None:
    """End ``conn``'s server process from another connection, as a Postgres fast shutdown
    does (FATAL ``admin_shutdown``, then the socket closes)."""
    pid = conn.get_server_pid()
    other = await asyncpg.connect(url)
    try:
        await other.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await other.close()


@pytest.mark.security(stride="D", asvs=("V16.5",))
async def test_a_connection_lost_mid_statement_is_a_503(database_server_url: str) -> None:
    """The chaos test's 500 (issue 9): Postgres went away while a statement ran. asyncpg gives
    a lost connection back to its pool before the statement's caller sees the error, and
    the pool's proxy then refuses every call (``terminate()`` included) with InterfaceError."""
    db = await _open(database_server_url, seconds=3)
    try:

        async def statement_cut_short() -> None:
            async with db.connection() as conn:
                ended = asyncio.create_task(_end_backend_of(database_server_url, conn))
                try:
                    await conn.fetchval("SELECT pg_sleep(2)")
                finally:
                    await ended

        with pytest.raises(DatabaseUnavailable):
            await statement_cut_short()
        assert _in_use(db) == 0
        assert await db.fetchval("SELECT 1") == 1
    finally:
        await db.close()


@pytest.mark.security(stride="D", asvs=("V16.5",))
async def test_a_connection_lost_between_statements_is_a_503(database_server_url: str) -> None:
    """Lost while the block held it idle (between two statements of a transaction): the
    next statement, and the rollback, meet a connection the pool has already taken back."""
    db = await _open(database_server_url, seconds=3)
    try:

        async def block_cut_short() -> None:
            async with db.transaction() as conn:
                await conn.fetchval("SELECT 1")
                await _end_backend_of(database_server_url, conn)
                await asyncio.sleep(0.2)  # the loss reaches the client
                await conn.fetchval("SELECT 2")

        with pytest.raises(DatabaseUnavailable):
            await block_cut_short()
        assert _in_use(db) == 0
        assert await db.fetchval("SELECT 1") == 1
    finally:
        await db.close()


async def test_a_task_cancelled_after_its_connection_was_lost_stays_cancelled(
    database_server_url: str,
) -> None:
    """A cancellation (a deadline, a client gone) is not replaced by an error of the
    connection that was lost before it."""
    db = await _open(database_server_url, seconds=3)
    try:
        lost = asyncio.Event()

        async def waits_holding_a_lost_connection() -> None:
            async with db.connection() as conn:
                await _end_backend_of(database_server_url, conn)
                await asyncio.sleep(0.2)
                lost.set()
                await asyncio.sleep(5)

        task = asyncio.create_task(waits_holding_a_lost_connection())
        await lost.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _in_use(db) == 0
    finally:
        await db.close()
