"""A PgBouncer of a test's own, in transaction pooling, in front of the test Postgres.

It runs Debian's binary (``make pgbouncer``) as a plain process with its ini and userlist in
a scratch folder, on a free port, clients trusted (loopback only), and the Postgres user and
password of ``server_url`` used towards the server. As root it drops to ``nobody`` (PgBouncer
refuses to run as root), so its folder is world-readable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import unquote, urlsplit

from bulwark.devstack.net import free_port
from bulwark.devstack.procs import stop_process_group

from .debian_tools import start_listening, tool


class PgBouncer:
    """``with PgBouncer(server_url) as bouncer: bouncer.url(database_url)``; stopped on exit.

    Args:
        server_url: ``postgresql://user[:password]@host:port/db`` of the Postgres behind it.
        pool_size: server connections per database and user (``default_pool_size``).
    """

    def __init__(self, server_url: str, *, pool_size: int = 4) -> None:
        parts = urlsplit(server_url)
        self.user = unquote(parts.username or "postgres")
        self._password = unquote(parts.password or "")
        self._server = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.pool_size = pool_size
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="bulwark-pgbouncer-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """PgBouncer's own log (its stderr)."""
        return self._dir / "pgbouncer.log"

    def url(self, database_url: str) -> str:
        """``database_url`` with its host and port replaced by this PgBouncer's."""
        parts = urlsplit(database_url)
        return parts._replace(netloc=f"{self.user}@127.0.0.1:{self.port}").geturl()

    def start(self) -> Self:
        """Write the config, start PgBouncer and wait (10 s at most) until it accepts.

        Raises:
            RuntimeError: it exited or did not listen in time (the message holds its log).
        """
        binary = tool("pgbouncer")
        self._dir.chmod(0o755)
        host, port = self._server
        quote = '"'
        (self._dir / "userlist.txt").write_text(
            f'"{self.user}" "{self._password.replace(quote, quote * 2)}"\n'
        )
        (self._dir / "userlist.txt").chmod(0o644)
        ini = self._dir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host={host} port={port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self._dir / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\n"
            "max_client_conn = 500\n" + ("user = nobody\n" if os.geteuid() == 0 else "")
        )
        ini.chmod(0o644)
        try:
            self._proc = start_listening([binary, str(ini)], self.log_path, self.port)
        except RuntimeError:
            self.stop()  # its folder too
            raise
        return self

    def stop(self) -> None:
        """Stop PgBouncer (SIGTERM, then SIGKILL after 5 s) and delete its folder."""
        if self._proc is not None:
            stop_process_group(self._proc, grace=5.0)
            self._proc = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
