"""Loopback networking helpers: free ports and readiness probes."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import httpx

#: Lowest port `free_port` hands out.
LOWEST_PORT = 10000
#: Ports already handed out by this process: never twice, even before their server binds.
_handed_out: set[int] = set()


def ephemeral_ports() -> range:
    """The kernel's range for the local ports of outgoing connections (Linux's
    ``ip_local_port_range``; 32768-60999 when it cannot be read)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that is free now, picked at random below the kernel's
    ephemeral range and never handed out before by this process.

    Not bind-to-port-0: that port comes from the ephemeral range, where any outgoing
    connection (a test's HTTP client, a database pool) can take it as its local port between
    this pick and the server's bind ("Address already in use"). Below the range, only a
    server binding that very port can, and callers start theirs on it at once.
    """
    candidates = range(LOWEST_PORT, max(LOWEST_PORT + 1000, ephemeral_ports().start))
    for _ in range(200):
        port = random.choice(candidates)  # noqa: S311  # a port number, not a secret
        if port not in _handed_out and port_free(host, port):
            _handed_out.add(port)
            return port
    raise OSError(f"no free port on {host} in {candidates.start}-{candidates.stop - 1}")


def port_free(host: str, port: int) -> bool:
    """True when a TCP server could listen on ``host:port`` now (bound and released at once,
    with ``SO_REUSEADDR`` as the servers set it, so connections in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def tcp_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connection to ``host:port`` is accepted within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def redis_pings(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a Redis server at ``host:port`` answers ``PING`` with ``+PONG``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True when ``GET url`` answers 200 within ``timeout`` seconds."""
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def grpc_serving(target: str, timeout: float = 1.0) -> bool:
    """True when the gRPC server at ``target`` (``host:port``) is ready.

    Asks the standard health service (``grpc.health.v1``, service ``""``) and wants ``SERVING``.
    A server without the health service (``UNIMPLEMENTED``) counts as ready once it answers at
    all; without grpcio installed, an accepted TCP connection is the best we can check.
    """
    try:
        import grpc  # noqa: PLC0415 - optional: devstack does not depend on grpcio
        from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: PLC0415
    except ImportError:
        host, _, port = target.rpartition(":")
        return tcp_accepts(host.strip("[]"), int(port))
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            return code == grpc.StatusCode.UNIMPLEMENTED
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
