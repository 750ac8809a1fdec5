"""The command-line tools that ``make`` fetches from Debian (``make nginx``, ``make
pgbouncer``): where to find one, and how a test runs it as a plain process."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from bulwark.devstack.net import tcp_accepts
from bulwark.devstack.procs import die_with_parent, stop_process_group
from bulwark.devstack.tools import fetched_tool

_READY_SECONDS = 10.0


def tool(name: str) -> str:
    """Path of ``name`` (`fetched_tool`); skips the test when there is none (fails when
    ``CI`` is set: CI must run it)."""
    found = fetched_tool(name)
    if found is not None:
        return found
    message = f"{name} not found: run `make {name}` (Debian's {name} package)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must run this test")
    pytest.skip(message)


def start_listening(
    argv: Sequence[str], log_path: Path, port: int, *, logs: Sequence[Path] = ()
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a session of its own that dies with the tests, its output appended
    to ``log_path``, and return once ``127.0.0.1:port`` accepts (10 s at most).

    Raises:
        RuntimeError: it exited or did not listen in time; it is stopped, and the message
            holds ``log_path`` and ``logs``.
    """
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - our own binaries and configs
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - only a prctl, set up in advance
        )
    deadline = time.monotonic() + _READY_SECONDS
    while not tcp_accepts("127.0.0.1", port):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process_group(process, grace=5.0)
            text = "\n".join(p.read_text(errors="replace") for p in (log_path, *logs) if p.exists())
            raise RuntimeError(f"{Path(argv[0]).name} did not start:\n{text}")
        time.sleep(0.05)
    return process
