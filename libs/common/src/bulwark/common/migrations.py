"""Schema migrations: numbered SQL files applied by a one-shot command, never by a server.

Each service keeps its migrations as ``NNN_name.sql`` files in its own package folder.
``bulwark-auth migrate`` and ``bulwark-api migrate`` (`run_migrate_command`) apply the ones
not yet recorded in ``schema_migrations``, in order, each in its own transaction that first
takes a transaction-scoped advisory lock: any number of migration jobs started at once apply
each file exactly once, and the lock ends with its transaction, so the runner also works
through PgBouncer's transaction pooling.

A serving replica only checks (`SchemaCheck`, part of ``/readyz``): while its code knows a
migration the database lacks, it answers 503 not ready, so that a rollout never sends
traffic to a replica whose tables are not there yet.
"""

import asyncio
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import asyncpg

from bulwark.common.db import Database
from bulwark.common.logging import configure_logging, get_logger
from bulwark.common.problems import ServiceUnavailable
from bulwark.common.settings import SettingsError, env_database_url, env_float

_log = get_logger(__name__)
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql\Z")
# Key of the advisory lock taken by each migration's transaction (shared by every runner).
_MIGRATION_LOCK_KEY = 0x42_55_4C_57  # "BULW"
#: Longest a migration statement (or the wait for another runner's migration) may take.
MIGRATION_TIMEOUT_SECONDS = 600
_CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version integer PRIMARY KEY,"
    " name text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())"
)


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


async def apply_migrations(conn: asyncpg.Connection, directory: Path) -> list[int]:
    """Apply the migrations in ``directory`` not yet applied on ``conn``'s database; return
    the versions applied now (ascending).

    Each file runs in its own transaction, after ``pg_advisory_xact_lock``, with
    ``statement_timeout`` = `MIGRATION_TIMEOUT_SECONDS` (so the wait for another runner's
    lock is bounded too).

    Raises:
        asyncpg.PostgresError: a migration failed (or timed out); it is rolled back and the
            later ones are not run.
    """
    applied_now: list[int] = []
    timeout = MIGRATION_TIMEOUT_SECONDS
    for version, path in migration_files(directory):
        async with conn.transaction():
            await conn.execute(f"SET LOCAL statement_timeout = '{timeout}s'")
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_KEY)
            await conn.execute(_CREATE_TABLE)
            done = await conn.fetchval(
                "SELECT true FROM schema_migrations WHERE version = $1", version
            )
            if done:
                continue
            await conn.execute(path.read_text(), timeout=timeout)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                version,
                path.name,
            )
        applied_now.append(version)
        _log.info("migration_applied", version=version, name=path.name)
    return applied_now


async def pending_migrations(database: Database, directory: Path) -> list[int]:
    """The versions in ``directory`` that ``database`` has not applied (ascending).

    Raises:
        DatabaseUnavailable: the database cannot answer within its timeout.
    """
    known = [version for version, _ in migration_files(directory)]
    try:
        rows = await database.fetch("SELECT version FROM schema_migrations")
    except asyncpg.UndefinedTableError:
        return known
    applied = {row["version"] for row in rows}
    return [version for version in known if version not in applied]


class SchemaCheck:
    """Readiness of the schema: every migration of this code's ``directory`` is applied.

    Once the schema has been seen current, later checks cost nothing (migrations only ever
    add); until then each check asks the database again.
    """

    def __init__(self, database: Database, directory: Path) -> None:
        self._database = database
        self._directory = directory
        self._current = False

    async def ensure_current(self) -> None:
        """Return when the schema is current.

        Raises:
            ServiceUnavailable: migrations are pending (503; run the service's ``migrate``).
            DatabaseUnavailable: the database cannot answer within its timeout.
        """
        if self._current:
            return
        pending = await pending_migrations(self._database, self._directory)
        if pending:
            _log.warning("schema_behind", pending=pending)
            raise ServiceUnavailable("The database schema is behind this version.")
        self._current = True


async def _migrate(database_url: str, timeout_seconds: float, directory: Path) -> list[int]:
    # No statement cache: through PgBouncer's transaction pooling (before 1.21) a statement
    # prepared in one migration's transaction may be unknown to the next one's connection.
    conn = await asyncpg.connect(
        database_url,
        timeout=timeout_seconds,
        server_settings={"timezone": "UTC"},
        statement_cache_size=0,
    )
    try:
        return await apply_migrations(conn, directory)
    finally:
        await conn.close(timeout=timeout_seconds)


def run_migrate_command(program: str, directory: Path, environ: Mapping[str, str]) -> int:
    """``<program> migrate``: apply ``directory``'s pending migrations to ``DATABASE_URL``.

    Reads only ``DATABASE_URL``, ``DATABASE_TIMEOUT_SECONDS`` (connecting, default 3) and
    ``LOG_LEVEL``; logs one ``migration_applied`` line per file and a ``migrations_done``
    summary. Safe to start several at once (a Kubernetes Job's retries, two rollouts).
    Returns the exit status: 0 done (also when nothing was pending), 1 a migration failed
    or the database could not be reached, 2 a bad setting.
    """
    try:
        database_url = env_database_url(environ, "DATABASE_URL")
        timeout = env_float(environ, "DATABASE_TIMEOUT_SECONDS", 3.0, minimum=0.1)
    except SettingsError as error:
        print(f"{program}: configuration error: {error}", file=sys.stderr)
        return 2
    service = program.removeprefix("bulwark-")
    configure_logging(service, environ.get("LOG_LEVEL", "INFO"))
    try:
        applied = asyncio.run(_migrate(database_url, timeout, directory))
    except (OSError, TimeoutError, asyncpg.PostgresError) as error:
        # The error's class and message, never the DSN (it may hold a password).
        _log.error("migrations_failed", error=type(error).__name__, detail=str(error)[:500])
        return 1
    except (ValueError, asyncpg.InterfaceError) as error:
        # The driver refused the URL or an option: its message may quote part of the URL
        # (a password split at an unescaped character), so only the class is logged.
        _log.error("migrations_failed", error=type(error).__name__, detail="bad DATABASE_URL")
        return 2
    _log.info("migrations_done", applied=applied, count=len(applied))
    return 0
