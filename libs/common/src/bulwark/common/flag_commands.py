"""``bulwark-auth flags ...`` and ``bulwark-api flags ...``: the operator's view of the
anomaly flags in the service's own database (``DATABASE_URL``; docs/anomalies.md).

    flags list [--user ID] [--kind K] [--status open|reviewed] [--limit N] [--json]
    flags review ID [--note TEXT]

``list`` prints the newest flags first: a header and one tab-separated line per flag (id,
detected_at, status, kind, user_id, evidence as compact JSON), or with ``--json`` one JSON
object per line (the `AnomalyFlag` fields, snake_case). ``review`` marks an open flag
reviewed. Exit status: 0 done, 1 refused or the database unreachable, 2 bad setting.
"""

import argparse
import asyncio
import os
import sys
import uuid
from collections.abc import Mapping
from typing import TextIO

import asyncpg
import msgspec

from bulwark.common.anomaly_flags import (
    MAX_LISTED,
    AnomalyFlag,
    FlagStatus,
    list_flags,
    review_flag,
)
from bulwark.common.command_line import CommandParser
from bulwark.common.settings import env_database_url


def _listed_count(text: str) -> int:
    """``--limit``: an integer from 1 to `MAX_LISTED` (argparse reports anything else)."""
    count = int(text)
    if not 1 <= count <= MAX_LISTED:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_LISTED}")
    return count


def add_parser(commands: "argparse._SubParsersAction[CommandParser]") -> None:
    """Add the ``flags`` command and its actions to a service's subcommands (a
    `CommandParser`'s, so that ids, kinds and notes may begin with ``-``)."""
    parser = commands.add_parser("flags", help="list and review anomaly flags")
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="list flags, newest first")
    listing.add_argument("--user", type=uuid.UUID, help="only this user id")
    listing.add_argument("--kind", help="only this kind (e.g. request_burst)")
    listing.add_argument("--status", choices=["open", "reviewed"], help="only this status")
    listing.add_argument(
        "--limit",
        type=_listed_count,
        default=100,
        help=f"at most this many (1-{MAX_LISTED}; 100)",
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    review = actions.add_parser("review", help="mark an open flag reviewed")
    review.add_argument("id", type=int)
    review.add_argument("--note", help="why (kept with the flag, at most 500 characters)")


def _line(flag: AnomalyFlag) -> str:
    evidence = msgspec.json.encode(dict(sorted(flag.evidence.items()))).decode()
    detected = flag.detected_at.isoformat().replace("+00:00", "Z")
    return "\t".join([str(flag.id), detected, flag.status, flag.kind, flag.user_id, evidence])


#: Longest the commands wait to connect, and for each statement, in seconds.
_TIMEOUT_SECONDS = 10.0


async def _connect(database_url: str) -> asyncpg.Connection:
    """One connection for one command: every wait bounded, and no prepared statement kept
    between statements, so ``DATABASE_URL`` may name PgBouncer in transaction pooling."""
    return await asyncpg.connect(
        database_url,
        timeout=_TIMEOUT_SECONDS,
        command_timeout=_TIMEOUT_SECONDS,
        statement_cache_size=0,
    )


async def _list(database_url: str, args: argparse.Namespace, out: TextIO) -> int:
    status: FlagStatus | None = args.status
    conn = await _connect(database_url)
    try:
        flags = await list_flags(
            conn, user_id=args.user, kind=args.kind, status=status, limit=args.limit
        )
    finally:
        await conn.close()
    if args.json:
        for flag in flags:
            print(msgspec.json.encode(flag).decode(), file=out)
        return 0
    print("id\tdetected_at\tstatus\tkind\tuser_id\tevidence", file=out)
    for flag in flags:
        print(_line(flag), file=out)
    return 0


async def _review(database_url: str, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    conn = await _connect(database_url)
    try:
        reviewed = await review_flag(conn, args.id, args.note)
    finally:
        await conn.close()
    if not reviewed:
        print(f"flags review: no open flag {args.id}", file=err)
        return 1
    print(f"flag {args.id} reviewed", file=out)
    return 0


def run(
    args: argparse.Namespace,
    *,
    program: str,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
) -> int:
    """Run ``<program> flags <action>`` against ``DATABASE_URL``; returns the exit status.

    Raises:
        SettingsError: ``DATABASE_URL`` is not set.
    """
    env = os.environ if environ is None else environ
    stdout = sys.stdout if out is None else out
    stderr = sys.stderr if out is None else out
    database_url = env_database_url(env, "DATABASE_URL")
    try:
        if args.action == "list":
            return asyncio.run(_list(database_url, args, stdout))
        return asyncio.run(_review(database_url, args, stdout, stderr))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        print(f"{program} flags: database error: {type(exc).__name__}", file=stderr)
        return 1
