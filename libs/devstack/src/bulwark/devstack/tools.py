"""Command-line tools the Makefile fetches when they are missing (``make nginx``, ``make
pgbouncer``, ``make wrk``): extracted into ``.bulwark/tools/bin`` of the checkout."""

import shutil

from bulwark.devstack.cli import repo_root


def fetched_tool(name: str) -> str | None:
    """Path of ``name``: the one ``make <name>`` put in ``.bulwark/tools/bin``, else the
    one on ``PATH``; None when there is neither."""
    local = repo_root() / ".bulwark" / "tools" / "bin" / name
    if local.is_file():
        return str(local)
    return shutil.which(name)
