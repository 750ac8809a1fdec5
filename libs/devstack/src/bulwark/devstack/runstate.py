"""The run-state file of ``bulwark-dev run``: ``.bulwark/run/stack.json``.

It says which process runs the stack and, per service, its pid and where it listens::

    {"runner": {"pid": 4711, "started": "912345"},
     "services": {"api": {"pid": 4720, "started": "912400", "port": 8000,
                          "address": "http://127.0.0.1:8000", "metrics_port": 9464,
                          "metrics_url": "http://127.0.0.1:9464/metrics"}, ...},
     "mail": {"smtp_url": "smtp://127.0.0.1:10025", "folder": "/.../.bulwark/mail"}}

(``mail`` only when the run started its SMTP sink, i.e. SMTP_URL was not set.)

``run`` writes it once the stack is up and again after each restart, and removes it when it
stops; ``demo`` takes its URLs from it; ``stop`` and the next ``run`` find in it what an earlier
run left alive. A pid is believed only with the start time recorded beside it (``started``,
from ``/proc``), so a pid reused by another program since is never taken for ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bulwark.devstack.procs import process_start, same_process, stop_pid_group, wait_gone


@dataclass(frozen=True)
class ServiceRecord:
    """One running service: its process and where it listens (``address`` is a base URL for
    HTTP services, ``host:port`` for gRPC)."""

    pid: int
    started: str | None
    port: int
    address: str
    metrics_port: int | None = None
    metrics_url: str | None = None


@dataclass(frozen=True)
class RunState:
    """What ``.bulwark/run/stack.json`` holds."""

    runner_pid: int
    runner_started: str | None
    services: Mapping[str, ServiceRecord]
    smtp_url: str | None = None  # the SMTP sink's, in the runner process
    mail_folder: str | None = None  # where the sink stores what it receives

    def address(self, service: str) -> str | None:
        """Where ``service`` listens (``http://127.0.0.1:8000``), or None if it is not listed."""
        record = self.services.get(service)
        return None if record is None else record.address

    def to_json(self) -> str:
        """The file's text."""
        data: dict[str, Any] = {
            "runner": {"pid": self.runner_pid, "started": self.runner_started},
            "services": {name: asdict(record) for name, record in self.services.items()},
        }
        if self.smtp_url is not None:
            data["mail"] = {"smtp_url": self.smtp_url, "folder": self.mail_folder}
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> RunState:
        """Parse the file's text; raises ``ValueError`` (or ``KeyError``/``TypeError``) when
        it is not what ``to_json`` writes."""
        data: dict[str, Any] = json.loads(text)
        mail = data.get("mail") or {}
        return cls(
            runner_pid=int(data["runner"]["pid"]),
            runner_started=data["runner"].get("started"),
            services={name: ServiceRecord(**rec) for name, rec in data["services"].items()},
            smtp_url=mail.get("smtp_url"),
            mail_folder=mail.get("folder"),
        )


@dataclass(frozen=True)
class Leftover:
    """A live process of an earlier run: ``what`` is ``runner`` or a service name."""

    what: str
    pid: int
    record: ServiceRecord | None = None

    def describe(self) -> str:
        """``api        pid 4720  port 8000  metrics 9464``."""
        line = f"  {self.what:<10} pid {self.pid}"
        if self.record is not None:
            line += f"  port {self.record.port}"
            if self.record.metrics_port is not None:
                line += f"  metrics {self.record.metrics_port}"
        return line


class RunFile:
    """``.bulwark/run/stack.json``: read, written whole (never half), removed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> RunState | None:
        """The recorded state, or None when there is no file or it cannot be read."""
        try:
            return RunState.from_json(self.path.read_text())
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, state: RunState) -> None:
        """Replace the file with ``state`` (written beside it, then renamed over it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_text(state.to_json() + "\n")
        partial.replace(self.path)

    def remove(self, runner_pid: int | None = None) -> None:
        """Remove the file; with ``runner_pid``, only if that process wrote it."""
        state = self.read()
        if runner_pid is None or state is None or state.runner_pid == runner_pid:
            self.path.unlink(missing_ok=True)

    def leftovers(self) -> list[Leftover]:
        """Processes the recorded run left alive (the runner first), ourselves excepted."""
        state = self.read()
        if state is None:
            return []
        found: list[Leftover] = []
        me = os.getpid()
        if state.runner_pid != me and same_process(state.runner_pid, state.runner_started):
            found.append(Leftover("runner", state.runner_pid))
        for name, record in state.services.items():
            if same_process(record.pid, record.started):
                found.append(Leftover(name, record.pid, record))
        return found


def this_process() -> tuple[int, str | None]:
    """Our pid and start time, as a ``RunState`` records its runner."""
    pid = os.getpid()
    return pid, process_start(pid)


def leftover_message(leftovers: list[Leftover], run_file: Path) -> str:
    """The one message that names a live earlier run and says how to stop it."""
    lines = "\n".join(leftover.describe() for leftover in leftovers)
    return (
        f"an earlier `bulwark-dev run` is still alive (from {run_file}):\n{lines}\n"
        "Stop it with `make stop` (or `.venv/bin/bulwark-dev stop`), or start with --replace "
        "(`make run RUN_ARGS=--replace`) to stop it first."
    )


def stop_leftovers(leftovers: list[Leftover], grace: float = 30.0) -> None:
    """Stop an earlier run: its runner first (SIGTERM: it stops its services and embedded
    servers itself), SIGKILL if it has not gone within ``grace`` seconds; then any of its
    services still alive (their process groups: SIGTERM, then SIGKILL)."""
    for leftover in leftovers:
        if leftover.what != "runner":
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(leftover.pid, signal.SIGTERM)
        if not wait_gone(leftover.pid, grace):
            with contextlib.suppress(ProcessLookupError):
                os.kill(leftover.pid, signal.SIGKILL)
            wait_gone(leftover.pid, 5.0)
    for leftover in leftovers:
        record = leftover.record
        if record is not None and same_process(leftover.pid, record.started):
            stop_pid_group(leftover.pid, grace=5.0)
