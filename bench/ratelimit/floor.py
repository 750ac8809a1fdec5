"""``python -m bench.ratelimit.floor PORT``: the transport floor of ``bench.ratelimit``.

A ``grpc.aio`` server on uvloop, as ``bulwark-ratelimit`` runs, whose ``ShouldRateLimit``
answers OK at once: no Redis, no rules, no log line, no span. What it costs per call is what
any Python RLS server pays before it decides anything, so Bulwark's figure is read against it.
It answers the standard health check, so the benchmark waits for it as for the service.
"""

import sys
from typing import Any

import grpc
import uvloop
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # not in stubs


class AnswerOk(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]  # generated code
    """``ShouldRateLimit`` answered OK without looking at the request."""

    async def ShouldRateLimit(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC name
        """OK for every request."""
        return rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OK)


async def serve(port: int) -> None:
    """Serve on 127.0.0.1:``port`` until terminated."""
    server = grpc.aio.server()
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(AnswerOk(), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
