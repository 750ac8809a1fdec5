"""A throwaway Postgres primary with a hot-standby streaming replica, both on loopback.

Both servers are the embedded ones (``bulwark.devstack.embedded``: ``pgserver``'s binaries,
free loopback ports, trust authentication), in a folder of their own, so nothing of the
machine's Postgres is touched. The primary is a fresh cluster (``wal_level`` is ``replica``
by default, and ``initdb``'s ``pg_hba.conf`` trusts replication connections from loopback);
the standby is a ``pg_basebackup -R`` copy of it (``standby.signal`` and
``primary_conninfo`` written by ``-R``), started on another port. As root, both run as the
same unprivileged account as the embedded server. `StreamingReplica.stop` stops both,
standby first, and is safe to call on any path, twice, or after a failed start.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import asyncpg

from bulwark.devstack.embedded import PG_SUPERUSER, EmbeddedPostgres

#: Longest wait for a base backup, a start or a catch-up, in seconds.
TIMEOUT = 60.0


def _bin(name: str) -> str:
    spec = importlib.util.find_spec("pgserver")
    assert spec is not None, "the pgserver package is not installed"
    assert spec.submodule_search_locations, "pgserver is not a package"
    return str(Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / name)


class StreamingReplica:
    """``primary`` and ``standby`` (`EmbeddedPostgres`) under ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.primary = EmbeddedPostgres(folder / "primary")
        self.standby = EmbeddedPostgres(folder / "standby")

    def start(self) -> Self:
        """Start the primary, copy it with ``pg_basebackup -R`` and start the standby."""
        try:
            self.primary.start()
            self._base_backup()
            self.standby.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _base_backup(self) -> None:
        target = self.standby.pgdata
        target.mkdir(mode=0o700, parents=True)
        account = None
        if os.geteuid() == 0:
            account = self.standby._account()  # the embedded server's account
            assert account is not None
            os.chown(target, account.pw_uid, account.pw_gid)
        subprocess.run(  # noqa: S603 - fixed binary, arguments built here
            [
                _bin("pg_basebackup"),
                *("-D", str(target), "-h", "127.0.0.1", "-p", str(self.primary.port)),
                *("-U", PG_SUPERUSER, "-R", "-X", "stream", "-c", "fast", "--no-sync"),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=TIMEOUT,
            check=True,
            cwd=target,
            user=None if account is None else account.pw_uid,
            group=None if account is None else account.pw_gid,
            extra_groups=None if account is None else [],
        )

    def stop(self) -> None:
        """Stop the standby, then the primary (each only if started). Idempotent."""
        try:
            self.standby.stop()
        finally:
            self.primary.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def pause_replay(self) -> None:
        """Stop applying WAL on the standby (``pg_wal_replay_pause``); it keeps receiving."""
        asyncio.run(_execute(self.standby.url, "SELECT pg_wal_replay_pause()"))

    def resume_replay(self) -> None:
        """Apply WAL again (``pg_wal_replay_resume``)."""
        asyncio.run(_execute(self.standby.url, "SELECT pg_wal_replay_resume()"))

    def wait_caught_up(self) -> None:
        """Return once the standby has replayed everything the primary had written when
        called; raise after `TIMEOUT` seconds."""
        target = asyncio.run(_fetchval(self.primary.url, "SELECT pg_current_wal_insert_lsn()"))
        deadline = time.monotonic() + TIMEOUT
        while not asyncio.run(
            _fetchval(self.standby.url, "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", target)
        ):
            assert time.monotonic() < deadline, "the standby did not catch up"
            time.sleep(0.1)


async def _execute(url: str, query: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(query, timeout=10)
    finally:
        await conn.close(timeout=10)


async def _fetchval(url: str, query: str, *args: object) -> object:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await conn.fetchval(query, *args, timeout=10)
    finally:
        await conn.close(timeout=10)
