"""All SQL of the ``app_versions`` table."""

import datetime
from typing import NamedTuple, cast

import asyncpg

from bulwark.common.app_versions.manifest import Manifest
from bulwark.common.app_versions.versions import Platform, parse_version
from bulwark.common.db import Database


class MinimumVersion(NamedTuple):
    """One row: a platform's minimum version and when it was last set (UTC)."""

    platform: Platform
    minimum_version: str
    updated_at: datetime.datetime


def _platform(value: str) -> Platform:
    return cast("Platform", value)  # the table's CHECK allows no other


async def load_manifest(db: Database) -> Manifest:
    """The manifest in force, in one statement on a pooled connection (waits bounded by
    the pool's timeout).

    Raises:
        DatabaseUnavailable: the database did not answer in time.
        MalformedVersion: a row holds a version that is not SemVer (written around the CLI).
    """
    rows = await db.fetch("SELECT platform, minimum_version FROM app_versions")
    return {_platform(row["platform"]): parse_version(row["minimum_version"]) for row in rows}


async def list_minimums(conn: asyncpg.Connection) -> list[MinimumVersion]:
    """Every platform's minimum, by platform."""
    rows = await conn.fetch(
        "SELECT platform, minimum_version, updated_at FROM app_versions ORDER BY platform"
    )
    return [
        MinimumVersion(_platform(r["platform"]), r["minimum_version"], r["updated_at"])
        for r in rows
    ]


async def set_minimum(conn: asyncpg.Connection, platform: Platform, version: str) -> None:
    """Make ``version`` (already checked) the minimum of ``platform``."""
    await conn.execute(
        "INSERT INTO app_versions (platform, minimum_version) VALUES ($1, $2)"
        " ON CONFLICT (platform) DO UPDATE"
        " SET minimum_version = EXCLUDED.minimum_version, updated_at = now()",
        platform,
        version,
    )


async def unset_minimum(conn: asyncpg.Connection, platform: Platform) -> bool:
    """Remove the minimum of ``platform``; False when it had none."""
    result: str = await conn.execute("DELETE FROM app_versions WHERE platform = $1", platform)
    return result != "DELETE 0"
