"""The ports of one ``bulwark-dev run``: a service port and a metrics port per service.

A port not given is the default one, except a free one (picked now, from the kernel) with
``--free-ports``, and a metrics port whose service was moved off its default port: that one
moves too, to a free port, so a stack on other ports never collides with one on the defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bulwark.devstack.net import free_port, port_free

SERVICES = ("api", "auth", "ratelimit")
DEFAULT_PORTS = {"api": 8000, "auth": 8001, "ratelimit": 50051}
# Prometheus endpoints (docs/metrics.md); 9464 is OpenTelemetry's default for it.
DEFAULT_METRICS_PORTS = {"api": 9464, "auth": 9465, "ratelimit": 9466}


@dataclass(frozen=True)
class Ports:
    """Service name -> its listening port, and -> its Prometheus port."""

    service: Mapping[str, int]
    metrics: Mapping[str, int]

    def labelled(self) -> list[tuple[str, int]]:
        """Every port with what it is for: ``("api", 8000)``, ``("api metrics", 9464)``, ..."""
        return [
            pair
            for name in SERVICES
            for pair in ((name, self.service[name]), (f"{name} metrics", self.metrics[name]))
        ]

    def taken(self, host: str) -> list[tuple[str, int]]:
        """The labelled ports no server could listen on now (another program has them)."""
        return [(label, port) for label, port in self.labelled() if not port_free(host, port)]


def choose_ports(
    given: Mapping[str, int | None],
    given_metrics: Mapping[str, int | None],
    *,
    free: bool = False,
    host: str = "127.0.0.1",
) -> Ports:
    """Ports for every service: those given, else as the module docstring says.

    Raises ``ValueError`` when two of them are the same port.
    """
    taken_here = {p for p in (*given.values(), *given_metrics.values()) if p is not None}

    def pick() -> int:
        port = free_port(host)
        while port in taken_here:
            port = free_port(host)
        taken_here.add(port)
        return port

    service: dict[str, int] = {}
    for name in SERVICES:
        port = given.get(name)
        service[name] = port if port is not None else pick() if free else DEFAULT_PORTS[name]
    taken_here.update(service.values())
    metrics: dict[str, int] = {}
    for name in SERVICES:
        port = given_metrics.get(name)
        if port is None:
            moved = free or service[name] != DEFAULT_PORTS[name]
            port = pick() if moved else DEFAULT_METRICS_PORTS[name]
        metrics[name] = port
    ports = Ports(service, metrics)
    labelled = ports.labelled()
    for i, (label, port) in enumerate(labelled):
        for other, same in labelled[i + 1 :]:
            if port == same:
                raise ValueError(f"{label} and {other} would both use port {port}")
    return ports
