"""Find a command-line tool that ``make`` fetches from Debian (``make nginx``, ``make
pgbouncer``): ``.bulwark/tools/bin/<name>`` first, then ``PATH``."""

from __future__ import annotations

import os
import shutil

import pytest

from bulwark.devstack.cli import repo_root


def tool(name: str) -> str:
    """Path of ``name``; skips the test when there is none (fails when ``CI`` is set: CI must
    run it)."""
    local = repo_root() / ".bulwark" / "tools" / "bin" / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is not None:
        return found
    message = f"{name} not found: run `make {name}` (Debian's {name} package)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must run this test")
    pytest.skip(message)
