"""openid-client (v6, unmodified), a standard OAuth 2.0 client, run as a subprocess:
``tests/clients/node/oauth-client.mjs`` (its commands are listed there). ``make oauth-node-client``
installs it; without node or that install the tests that use it skip, and fail where ``CI``
is set."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "clients" / "node"
SCRIPT = PACKAGE / "oauth-client.mjs"
TIMEOUT = 30.0  # seconds a command may take (the device flow polls every `interval` seconds)


def node_or_skip() -> str:
    """Path of node with openid-client installed; skips (fails when ``CI`` is set) otherwise."""
    node = shutil.which("node")
    installed = (PACKAGE / "node_modules" / "openid-client" / "package.json").exists()
    if node is None or not installed:
        message = "node or openid-client missing (make oauth-node-client installs it)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the openid-client tests")
        pytest.skip(message)
    return node


@dataclass(frozen=True)
class NodeClient:
    """openid-client for one public ``client_id`` of the authorization server ``issuer``."""

    node: str
    issuer: str
    client_id: str

    def run(self, command: str, *args: str) -> dict[str, Any]:
        """Run ``command`` to its end; its last line (the outcome, tokens or ``{"error"}``)."""
        done = subprocess.run(  # noqa: S603 - our script, our arguments
            [self.node, str(SCRIPT), command, self.issuer, self.client_id, *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        lines = done.stdout.splitlines()
        assert lines, f"{command}: no output (exit {done.returncode}): {done.stderr[-2000:]}"
        outcome: dict[str, Any] = json.loads(lines[-1])
        return outcome

    def start(self, command: str, *args: str) -> NodeRun:
        """Start ``command`` (one that prints several lines, such as ``device``)."""
        process = subprocess.Popen(  # noqa: S603 - our script, our arguments
            [self.node, str(SCRIPT), command, self.issuer, self.client_id, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return NodeRun(process)


@dataclass
class NodeRun:
    """A command under way: read its lines one at a time, then its outcome."""

    process: subprocess.Popen[str]

    def _stdout(self) -> IO[str]:
        assert self.process.stdout is not None
        return self.process.stdout

    def line(self) -> dict[str, Any]:
        """The next line printed (blocks until there is one)."""
        line = self._stdout().readline()
        if not line:
            self.process.wait(TIMEOUT)
            stderr = self.process.stderr.read() if self.process.stderr else ""
            raise AssertionError(f"exited {self.process.returncode} early: {stderr[-2000:]}")
        printed: dict[str, Any] = json.loads(line)
        return printed

    def outcome(self) -> dict[str, Any]:
        """The last line, once the command has ended (at most ``TIMEOUT`` seconds)."""
        try:
            stdout, stderr = self.process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise
        lines = stdout.splitlines()
        assert lines, f"no outcome (exit {self.process.returncode}): {stderr[-2000:]}"
        outcome: dict[str, Any] = json.loads(lines[-1])
        return outcome

    def stop(self) -> None:
        """End the command if it still runs."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()
