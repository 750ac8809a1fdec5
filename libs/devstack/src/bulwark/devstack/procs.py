"""Process-group helpers: every child we start leads its own session, so stopping it also
stops whatever it spawned (workers, shells, reloaders)."""

from __future__ import annotations

import os
import signal
import subprocess


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
