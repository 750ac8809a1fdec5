"""Process helpers: process groups, identities that survive pid reuse, and children that die
with their parent.

Every child we start leads its own session, so stopping it also stops whatever it spawned
(workers, shells, reloaders), and a Ctrl-C in the terminal reaches only us.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to process group ``pgid``; return False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # A group we cannot signal is not ours any more (its leader's id was reused).
        return False
    return True


def stop_process_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> int | None:
    """Stop ``proc`` and its process group: SIGTERM, wait up to ``grace`` seconds, then SIGKILL.

    ``proc`` must have been started with ``start_new_session=True`` (its pid is the group id).
    Returns the leader's exit code (negative for a signal), or None if it could not be reaped.
    """
    pgid = proc.pid
    if proc.poll() is None:
        signal_group(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            signal_group(pgid, signal.SIGKILL)
            try:
                proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                return None
    # The leader is gone; children that ignored SIGTERM (or outlived it) go now.
    signal_group(pgid, signal.SIGKILL)
    return proc.returncode


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists and has not exited: a zombie (exited, not yet
    reaped) counts as gone, and so does pid 0 or less."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _exited(pid)


def _exited(pid: int) -> bool:
    """True when every thread of ``pid`` has exited. Its main thread alone is not enough: it
    can be a zombie while other threads still hold the process's files (listening sockets)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    return bool(tasks) and all(_stat_fields(task / "stat")[0] in ("Z", "X") for task in tasks)


def _stat_fields(path: Path) -> list[str]:
    """Fields of a ``/proc/.../stat`` file after the command name (state first), or ``["?"]``."""
    try:
        return path.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ["?"]


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat`` field 22),
    as a string; None where there is no ``/proc`` or no such process.

    A pid plus its start time names one process: a pid reused later has another start time.
    """
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return fields[19] if len(fields) > 19 else None


def same_process(pid: int, started: str | None) -> bool:
    """True when ``pid`` is alive and is the process that had start time ``started`` (without
    ``/proc``, or when ``started`` was not known, any live process of that pid)."""
    if not pid_alive(pid):
        return False
    now = process_start(pid)
    return started is None or now is None or now == started


def stop_pid_group(pid: int, grace: float = 10.0) -> bool:
    """Stop the process group led by ``pid`` (not our child: a process of an earlier run):
    SIGTERM, up to ``grace`` seconds for the leader to go, then SIGKILL to the group.
    Returns True once the leader is gone."""
    signal_group(pid, signal.SIGTERM)
    if wait_gone(pid, grace):
        signal_group(pid, signal.SIGKILL)  # whatever it left in its group
        return True
    signal_group(pid, signal.SIGKILL)
    return wait_gone(pid, 5.0)


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for process ``pid`` to exit; True once it has."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


_PR_SET_PDEATHSIG = 1


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


# Resolved once, here: the child between fork and exec should do as little as possible.
_prctl = _libc_prctl()


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen`` that makes the child get SIGKILL when its
    parent dies (Linux ``PR_SET_PDEATHSIG``); None where the platform has no such thing.

    The signal fires when the *thread* that forked the child exits, not only the process:
    start children from a long-lived thread (the main one). SIGKILL rather than SIGTERM: this
    is the path of a parent that was itself killed, where only a certain end frees the ports
    for the next run. A parent that dies between the fork and the ``prctl`` is caught by
    checking that the child's parent is still the one that forked it.
    """
    prctl = _prctl
    if prctl is None:
        return None
    parent = os.getpid()

    def arm() -> None:  # runs in the child, between fork and exec
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return arm
