"""One Postgres server, one database per service.

Given a server URL (``DATABASE_URL`` or the embedded server's), derive a URL per database and
create or drop those databases through the server's maintenance database ``postgres``.
Database names are ours (never user input), and are still checked against
``^[a-z_][a-z0-9_]*$`` before being quoted into DDL, which cannot take parameters.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

import asyncpg

DEFAULT_DATABASES = {"auth": "bulwark_auth", "api": "bulwark_api"}
MAINTENANCE_DATABASE = "postgres"
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_SCHEMES = ("postgresql", "postgres")


def validate_name(name: str) -> str:
    """Return ``name`` if it is a safe database name (``^[a-z_][a-z0-9_]*$``, at most 63
    characters, Postgres's limit); raise ``ValueError`` otherwise."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid database name {name!r}: want ^[a-z_][a-z0-9_]*$, <= 63 chars")
    return name


def unique_names(suffix: str | None = None) -> dict[str, str]:
    """``DEFAULT_DATABASES`` with a random (or the given) suffix, e.g. ``bulwark_auth_t3f9a1c``,
    for test runs that share a server."""
    suffix = suffix if suffix is not None else "t" + secrets.token_hex(4)
    return {
        service: validate_name(f"{name}_{suffix}") for service, name in DEFAULT_DATABASES.items()
    }


def database_url(server_url: str, name: str) -> str:
    """``server_url`` with its database replaced by ``name``; user, password, host, port and
    query (``sslmode``, ``host=/socket/dir``) are kept. Raises ``ValueError`` on a URL that is
    not ``postgresql://`` / ``postgres://`` or a bad name."""
    parts = urlsplit(server_url)
    if parts.scheme not in _SCHEMES:
        raise ValueError("expected a postgresql:// URL")
    return urlunsplit(parts._replace(path="/" + validate_name(name)))


def _quote(name: str) -> str:
    return '"' + validate_name(name) + '"'


async def create_databases(server_url: str, names: Iterable[str]) -> dict[str, str]:
    """Create each database in ``names`` that does not exist yet; return ``{name: url}``."""
    wanted = [validate_name(name) for name in names]
    conn = await asyncpg.connect(database_url(server_url, MAINTENANCE_DATABASE))
    try:
        for name in wanted:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                # Created concurrently by another run: what we wanted.
                with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                    await conn.execute(f"CREATE DATABASE {_quote(name)}")
    finally:
        await conn.close()
    return {name: database_url(server_url, name) for name in wanted}


async def drop_databases(server_url: str, names: Iterable[str]) -> None:
    """Drop each database in ``names`` if it exists, disconnecting its sessions first."""
    wanted = [validate_name(name) for name in names]
    conn = await asyncpg.connect(database_url(server_url, MAINTENANCE_DATABASE))
    try:
        for name in wanted:
            await conn.execute(f"DROP DATABASE IF EXISTS {_quote(name)} WITH (FORCE)")
    finally:
        await conn.close()
