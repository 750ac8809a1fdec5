"""nginx (Debian's binary, ``make nginx``) as the ingress of a test: ``ingress/nginx.conf``
filled in with a scratch prefix, free ports and the replicas' addresses, run as a plain
process (no daemon, nothing written outside its prefix), stopped on exit."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from bulwark.devstack.net import free_port
from bulwark.devstack.procs import stop_process_group

from .debian_tools import start_listening, tool

TEMPLATE = Path(__file__).parent / "ingress" / "nginx.conf"
#: The routes and retry rules every Bulwark ingress includes (docker-compose's nginx too).
ROUTES = Path(__file__).parents[2] / "deploy" / "nginx" / "bulwark-routes.conf"
#: The address nginx connects to the replicas from (``proxy_bind``): the one they trust.
PROXY_ADDRESS = "127.0.0.2"
_LINE = re.compile(r'^(\S+) (\S+) (\S+) (\d{3}) "([^"]*)" "([^"]*)"$')


@dataclass(frozen=True)
class Attempts:
    """One client request as nginx logged it: each upstream it tried and what that answered
    (``502`` for a replica that refused, reset or dropped the connection)."""

    request_id: str
    method: str
    uri: str
    status: int
    upstreams: tuple[str, ...]
    upstream_statuses: tuple[str, ...]


def _servers(addresses: Sequence[str]) -> str:
    return "\n".join(f"        server {a} max_fails=1 fail_timeout=10s;" for a in addresses)


class NginxIngress:
    """An ingress whose ports are chosen at once (so replicas can be pointed at it before it
    runs): ``ingress = NginxIngress()``, then ``ingress.start(auth=..., api=...,
    ratelimit=...)`` and ``ingress.stop()`` on every path."""

    def __init__(self) -> None:
        self.http_port = free_port()
        self.prefix = Path(tempfile.mkdtemp(prefix="bulwark-nginx-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the ingress, ``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, *, auth: Sequence[str], api: Sequence[str]) -> Self:
        """Write the config for these replicas (``host:port`` each), start nginx and wait
        (10 s at most) until it accepts.

        Raises:
            RuntimeError: it exited or did not listen in time (the message holds its log).
        """
        binary = tool("nginx")
        self.prefix.chmod(0o755)  # as root, the workers run as an unprivileged user
        text = TEMPLATE.read_text()
        values = {
            "PREFIX": str(self.prefix),
            "HTTP_PORT": str(self.http_port),
            "ROUTES": str(ROUTES),
        }
        for name, addresses in (("AUTH", auth), ("API", api)):
            values[f"{name}_SERVERS"] = _servers(addresses)
        for name, value in values.items():
            text = text.replace(f"@{name}@", value)
        conf = self.prefix / "nginx.conf"
        conf.write_text(text)
        try:
            self._proc = start_listening(
                [binary, "-p", str(self.prefix), "-c", str(conf), "-e", "stderr"],
                self.prefix / "stderr.log",
                self.http_port,
                logs=[self.prefix / "error.log"],
            )
        except RuntimeError:
            self.stop()  # its prefix too
            raise
        return self

    def attempts(self) -> list[Attempts]:
        """Every request logged so far."""
        found = []
        path = self.prefix / "access.log"
        for line in path.read_text().splitlines() if path.exists() else []:
            match = _LINE.match(line)
            if match is None:
                continue
            rid, method, uri, status, addresses, statuses = match.groups()
            found.append(
                Attempts(
                    rid,
                    method,
                    uri,
                    int(status),
                    tuple(a.strip() for a in addresses.split(",") if a.strip() != "-"),
                    tuple(s.strip() for s in statuses.split(",") if s.strip() != "-"),
                )
            )
        return found

    def stop(self) -> None:
        """Stop nginx (SIGTERM, then SIGKILL after 5 s) and delete its prefix."""
        if self._proc is not None:
            stop_process_group(self._proc, grace=5.0)
            self._proc = None
        shutil.rmtree(self.prefix, ignore_errors=True)
