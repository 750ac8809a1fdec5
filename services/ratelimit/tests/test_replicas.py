"""Calls spread over every rate-limiter replica the target resolves to (round robin), as they
must behind a Kubernetes headless Service: with gRPC's default (pick_first) one replica would
take every call and a scale-up would add nothing."""

from pathlib import Path

from bulwark.common.ratelimit_client import RateLimitClient

from .conftest import ServerFactory


async def test_calls_spread_over_every_address_of_the_target(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    # Two replicas that differ only in their limit, so each answer tells which one decided.
    ports = []
    for limit in (1000, 2000):
        rules = tmp_path / f"rules-{limit}.yaml"
        rules.write_text(
            "domains:\n  - domain: test\n    descriptors:\n"
            f"      - key: k\n        rate_limit: {{requests: {limit}, window_seconds: 60}}\n"
        )
        server = await start_server(RATELIMIT_RULES=str(rules))
        ports.append(server.port)
    # What a name with two addresses resolves to (a headless Service lists every pod's).
    target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)
    client = RateLimitClient(target, "test", timeout_seconds=2.0)
    try:
        limits = [(await client.should_rate_limit([[("k", "v")]])).limit for _ in range(20)]
    finally:
        await client.close()
    assert limits.count(1000) >= 5, limits
    assert limits.count(2000) >= 5, limits


async def test_a_replica_listens_on_an_ipv6_host(start_server: ServerFactory) -> None:
    server = await start_server(HOST="::1")
    client = RateLimitClient(f"ipv6:[::1]:{server.port}", "test", timeout_seconds=2.0)
    try:
        assert (await client.should_rate_limit([[("k", "v")]])).allowed
    finally:
        await client.close()
