"""``bulwark_ratelimit_decisions_total`` and the gRPC call metrics of a real server (real
Redis, a real channel), read through a Prometheus registry as a scrape would."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bulwark.common import metrics
from bulwark.common.ratelimit_client import RateLimitClient, RateLimitUnavailable

from .conftest import ServerFactory

RULES = """
domains:
  - domain: shop
    descriptors:
      - key: endpoint
        value: checkout
        descriptors:
          - key: user_id
            rate_limit: {requests: 1, window_seconds: 60}
          - key: card_bin
            rate_limit: {requests: 1, window_seconds: 60}
            shadow_mode: true
          - key: remote_address
            rate_limit: {requests: 100, window_seconds: 60}
            failure_mode: deny
"""
DECISIONS = "bulwark_ratelimit_decisions_total"


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    provider = MeterProvider(
        metric_readers=[PrometheusMetricReader(scope_info_enabled=False, registry=registry)]
    )
    metrics.install(provider)
    yield registry
    metrics.uninstall()
    provider.shutdown()


@pytest.fixture
def shop_rules(tmp_path: Path) -> Path:
    path = tmp_path / "shop.yaml"
    path.write_text(RULES)
    return path


def _samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _decision(rule: str, result: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return DECISIONS, frozenset({"domain": "shop", "rule": rule, "result": result}.items())


async def test_decisions_are_counted_by_rule_and_result(
    start_server: ServerFactory, shop_rules: Path, registry: CollectorRegistry
) -> None:
    server = await start_server(RATELIMIT_RULES=str(shop_rules))
    client = RateLimitClient(f"127.0.0.1:{server.port}", "shop", timeout_seconds=2.0)
    user = [("endpoint", "checkout"), ("user_id", "u-8c1f")]
    card = [("endpoint", "checkout"), ("card_bin", "411111")]
    try:
        assert (await client.should_rate_limit([user, card])).allowed
        assert not (await client.should_rate_limit([user])).allowed  # Redis: over the limit
        assert not (await client.should_rate_limit([user])).allowed  # the local cache
        assert (await client.should_rate_limit([card])).allowed  # shadow: over, allowed
        with pytest.raises(RateLimitUnavailable):
            await client.should_rate_limit([user], hits_addend=1001)  # INVALID_ARGUMENT
    finally:
        await client.close()
    samples = _samples(registry)
    assert samples[_decision("endpoint=checkout/user_id", "ok")] == 1
    assert samples[_decision("endpoint=checkout/user_id", "over_limit")] == 2
    assert samples[_decision("endpoint=checkout/card_bin", "ok")] == 1
    assert samples[_decision("endpoint=checkout/card_bin", "shadow_over_limit")] == 1
    method = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
    for code, count in (("OK", 4), ("INVALID_ARGUMENT", 1)):
        labels = frozenset({"grpc_method": method, "grpc_code": code}.items())
        assert samples["bulwark_grpc_server_requests_total", labels] == count
        assert samples["bulwark_grpc_server_duration_seconds_count", labels] == count
    values = {value for _name, labels in samples for _label, value in labels}
    assert not values & {"u-8c1f", "411111"}


@pytest.mark.security(stride="R", asvs=("V16.2",))
async def test_failure_mode_answers_are_counted_apart(
    start_server: ServerFactory, shop_rules: Path, registry: CollectorRegistry, free_port: int
) -> None:
    server = await start_server(
        RATELIMIT_RULES=str(shop_rules),
        REDIS_URL=f"redis://127.0.0.1:{free_port}/0",  # nothing listens there
        REDIS_TIMEOUT_SECONDS="0.05",
    )
    client = RateLimitClient(f"127.0.0.1:{server.port}", "shop", timeout_seconds=2.0)
    try:
        decision = await client.should_rate_limit(
            [
                [("endpoint", "checkout"), ("user_id", "u-1")],
                [("endpoint", "checkout"), ("remote_address", "203.0.113.9")],
            ]
        )
        assert not decision.allowed  # the remote_address rule fails closed
        await client.should_rate_limit([[("no_such_rule", "x")]])  # unmatched: no decision
    finally:
        await client.close()
    samples = _samples(registry)
    assert samples[_decision("endpoint=checkout/user_id", "failure_allowed")] == 1
    assert samples[_decision("endpoint=checkout/remote_address", "failure_denied")] == 1
    assert sum(v for (name, _labels), v in samples.items() if name == DECISIONS) == 2
