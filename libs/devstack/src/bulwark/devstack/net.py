"""Loopback networking helpers: free ports and readiness probes."""

from __future__ import annotations

import socket

import httpx


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago (bind to port 0, then release).

    Another process may take it before the caller binds it; callers start a server on it at once.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


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
