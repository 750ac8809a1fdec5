"""``bulwark-api app-versions ...``: the operator's command for the minimum app versions in
``DATABASE_URL`` (docs/app-versions.md); no deployment, no restart.

    app-versions list [--json]
    app-versions set PLATFORM VERSION
    app-versions unset PLATFORM

``list`` prints a header and one tab-separated line per platform that has a minimum
(platform, minimum_version, updated_at), or with ``--json`` one JSON object per line.
``set`` refuses anything but a SemVer 2.0.0 version of at most 64 characters (exit 2).
Every replica applies a change within ``APP_VERSIONS_CACHE_SECONDS`` (at most 30 s), the
auth service within twice that. Exit status: 0 done, 1 nothing to unset or the database
unreachable, 2 bad argument or setting.
"""

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping
from typing import TextIO

import asyncpg
import msgspec

from bulwark.api.app_versions import queries
from bulwark.common.app_versions.versions import PLATFORMS, MalformedVersion, parse_version
from bulwark.common.command_line import CommandParser
from bulwark.common.settings import env_database_url

#: Longest the commands wait to connect, and for each statement, in seconds.
_TIMEOUT_SECONDS = 10.0


def _version(text: str) -> str:
    """``VERSION``: a SemVer 2.0.0 version (argparse reports anything else, exit 2)."""
    try:
        parse_version(text)
    except MalformedVersion as malformed:
        raise argparse.ArgumentTypeError(f"{text!r} is {malformed}") from None
    return text


def add_parser(commands: "argparse._SubParsersAction[CommandParser]") -> None:
    """Add the ``app-versions`` command and its actions to the API's subcommands."""
    parser = commands.add_parser("app-versions", help="list and set minimum app versions")
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="the minimum version of each platform")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    setting = actions.add_parser("set", help="set a platform's minimum version")
    setting.add_argument("platform", choices=PLATFORMS)
    setting.add_argument("version", type=_version, help="a semantic version, e.g. 3.2.0")
    unsetting = actions.add_parser("unset", help="remove a platform's minimum version")
    unsetting.add_argument("platform", choices=PLATFORMS)


async def _run(database_url: str, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    # No prepared statement kept: DATABASE_URL may name PgBouncer in transaction pooling.
    conn = await asyncpg.connect(
        database_url,
        timeout=_TIMEOUT_SECONDS,
        command_timeout=_TIMEOUT_SECONDS,
        statement_cache_size=0,
    )
    try:
        if args.action == "set":
            await queries.set_minimum(conn, args.platform, args.version)
            print(f"{args.platform}: minimum version {args.version}", file=out)
        elif args.action == "unset":
            if not await queries.unset_minimum(conn, args.platform):
                print(f"app-versions unset: {args.platform} has no minimum", file=err)
                return 1
            print(f"{args.platform}: no minimum version", file=out)
        else:
            _print_list(await queries.list_minimums(conn), json=args.json, out=out)
    finally:
        await conn.close()
    return 0


def _print_list(rows: list[queries.MinimumVersion], *, json: bool, out: TextIO) -> None:
    if not json:
        print("platform\tminimum_version\tupdated_at", file=out)
    for row in rows:
        updated = row.updated_at.isoformat().replace("+00:00", "Z")
        if json:
            line = {"platform": row.platform, "minimum_version": row.minimum_version}
            print(msgspec.json.encode({**line, "updated_at": updated}).decode(), file=out)
        else:
            print(f"{row.platform}\t{row.minimum_version}\t{updated}", file=out)


def run(
    args: argparse.Namespace,
    *,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
) -> int:
    """Run ``bulwark-api app-versions <action>`` against ``DATABASE_URL``; returns the exit
    status (see the module's docstring).

    Raises:
        SettingsError: ``DATABASE_URL`` is not set.
    """
    env = os.environ if environ is None else environ
    stdout = sys.stdout if out is None else out
    stderr = sys.stderr if out is None else out
    database_url = env_database_url(env, "DATABASE_URL")
    try:
        return asyncio.run(_run(database_url, args, stdout, stderr))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        print(f"bulwark-api app-versions: database error: {type(exc).__name__}", file=stderr)
        return 1
