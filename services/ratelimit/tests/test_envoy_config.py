"""deploy/envoy/envoy.yaml, checked offline: it is a valid Envoy v3 Bootstrap (every field and
typed_config known to Envoy's own protos, from xds-protos), and what its rate-limit filter asks
for is a rule that our real rate limiter enforces. No Envoy runs here (docs/deploy.md)."""

from pathlib import Path
from typing import Any

import grpc
import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2

# Imported for their registration in the descriptor pool: ParseDict resolves typed_config by it.
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf import json_format

from bulwark.ratelimit.server import RateLimitServer
from bulwark.ratelimit.settings import packaged_rules_path

from .conftest import ServerFactory

ENVOY_CONFIG = Path(__file__).parents[3] / "deploy" / "envoy" / "envoy.yaml"


def _bootstrap() -> Any:
    document = yaml.safe_load(ENVOY_CONFIG.read_text())
    # ignore_unknown_fields=False: a misspelt or removed field fails here, as in Envoy.
    return json_format.ParseDict(document, bootstrap_pb2.Bootstrap())


def _connection_manager() -> Any:
    (listener,) = _bootstrap().static_resources.listeners
    (chain,) = listener.filter_chains
    manager = hcm_pb2.HttpConnectionManager()
    assert chain.filters[0].typed_config.Unpack(manager)
    return manager


def test_the_envoy_config_is_a_valid_v3_bootstrap() -> None:
    clusters = {cluster.name for cluster in _bootstrap().static_resources.clusters}
    assert clusters == {"auth", "api", "ratelimit"}
    manager = _connection_manager()
    assert [f.name for f in manager.http_filters][-1] == "envoy.filters.http.router"
    routed = {r.route.cluster for vh in manager.route_config.virtual_hosts for r in vh.routes}
    assert routed == {"auth", "api"}


async def test_what_envoy_asks_for_is_a_rule_the_limiter_enforces(
    start_server: ServerFactory,
) -> None:
    manager = _connection_manager()
    limit_filter = rate_limit_pb2.RateLimit()
    assert manager.http_filters[0].typed_config.Unpack(limit_filter)
    assert limit_filter.rate_limit_service.grpc_service.envoy_grpc.cluster_name == "ratelimit"
    (host,) = manager.route_config.virtual_hosts
    (limit,) = host.rate_limits
    assert [action.WhichOneof("action_specifier") for action in limit.actions] == ["remote_address"]
    server: RateLimitServer = await start_server(RATELIMIT_RULES=str(packaged_rules_path()))
    # Envoy's remote_address action sends the entry ("remote_address", <client IP>).
    request = rls_pb2.RateLimitRequest(domain=limit_filter.domain)
    request.descriptors.add().entries.append(
        ratelimit_pb2.RateLimitDescriptor.Entry(key="remote_address", value="203.0.113.9")
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        answer = await rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(
            request, timeout=2
        )
    assert answer.overall_code == rls_pb2.RateLimitResponse.OK
    # a matched rule carries its limit; a descriptor no rule knows would carry none
    assert answer.statuses[0].current_limit.requests_per_unit > 0
