"""Postgres access: the connection pool and the migrations runner.

Migrations are numbered SQL files (``001_init.sql``, ``002_...sql``) in a service's own
folder, applied in order, each in its own transaction, under a Postgres advisory lock so
that any number of replicas starting at once apply each file exactly once.
"""

import re
from collections.abc import AsyncGenerator
from pathlib import Path

import asyncpg
from litestar.datastructures import State

from bulwark.common.logging import get_logger

_log = get_logger(__name__)
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# Key of the advisory lock held while migrating (any constant shared by all replicas).
_MIGRATION_LOCK_KEY = 0x42_55_4C_57  # "BULW"


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """Open an asyncpg pool to ``dsn`` (``postgresql://...``).

    Statements time out after 5 seconds server-side so a stuck query cannot hold a request.

    Raises:
        OSError, asyncpg.PostgresError: the server cannot be reached or refuses the login.
    """
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=10,
        server_settings={"statement_timeout": "5000", "timezone": "UTC"},
    )
    return pool


def migration_files(directory: Path) -> list[tuple[int, Path]]:
    """The migration files in ``directory`` as ``(version, path)``, ordered by version.

    Raises:
        ValueError: a ``.sql`` file is misnamed or two files share a version.
    """
    found: dict[int, Path] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file {path.name} must be named NNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise ValueError(f"two migrations share version {version}")
        found[version] = path
    return sorted(found.items())


async def apply_migrations(pool: asyncpg.Pool, directory: Path) -> list[int]:
    """Apply the not-yet-applied migrations in ``directory``; return the versions applied.

    Raises:
        asyncpg.PostgresError: a migration failed; it is rolled back and later ones not run.
    """
    applied_now: list[int] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY,"
                " name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            rows = await conn.fetch("SELECT version FROM schema_migrations")
            done = {row["version"] for row in rows}
            for version, path in migration_files(directory):
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        version,
                        path.name,
                    )
                applied_now.append(version)
                _log.info("migration_applied", version=version, name=path.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)
    return applied_now


async def provide_connection(state: State) -> AsyncGenerator[asyncpg.Connection, None]:
    """Litestar dependency: a pooled connection (``state.pool``) inside a transaction that
    commits when the handler returns and rolls back when it raises, so a failed request
    writes nothing."""
    pool: asyncpg.Pool = state.pool
    async with pool.acquire() as conn, conn.transaction():
        yield conn


#: Type names for handler signatures, so routes need not import asyncpg.
Connection = asyncpg.Connection
Record = asyncpg.Record
