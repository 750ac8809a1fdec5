"""The server's interceptors wrap each registered method once (issue 11: building a wrapped
handler on every call cost CPU per decision), and never remember a name a client made up."""

from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from bulwark.common.telemetry import GrpcServerTracing
from bulwark.ratelimit.server import AccessLogInterceptor

KNOWN = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"


async def _behavior(request: Any, context: Any) -> Any:
    return request


@pytest.mark.parametrize("interceptor", [AccessLogInterceptor(), GrpcServerTracing()])
async def test_each_method_is_wrapped_once_and_unknown_names_are_not_kept(
    interceptor: AccessLogInterceptor | GrpcServerTracing,
) -> None:
    looked_up: list[str] = []

    async def continuation(details: Any) -> Any:
        looked_up.append(details.method)
        if details.method != KNOWN:
            return None  # grpc.aio answers UNIMPLEMENTED
        return grpc.unary_unary_rpc_method_handler(_behavior)

    known: Any = SimpleNamespace(method=KNOWN)
    first = await interceptor.intercept_service(continuation, known)
    again = await interceptor.intercept_service(continuation, known)
    assert first is again
    assert first.unary_unary is not _behavior  # wrapped
    for n in range(100):
        made_up: Any = SimpleNamespace(method=f"/made.Up/Call{n}")
        assert await interceptor.intercept_service(continuation, made_up) is None
    assert looked_up == [KNOWN, *(f"/made.Up/Call{n}" for n in range(100))]
    assert list(interceptor._handlers) == [KNOWN]
