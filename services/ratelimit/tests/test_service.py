"""Unit tests (no I/O): request validation, hits_addend precedence, limit description."""

from typing import Any

import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2

from bulwark.ratelimit.rules import RateLimit
from bulwark.ratelimit.service import InvalidRequestError, describe_limit, parse_request

Unit = rls_pb2.RateLimitResponse.RateLimit


def request(*descriptors: list[tuple[str, str]], domain: str = "d", hits: int = 0) -> Any:
    message = rls_pb2.RateLimitRequest(domain=domain, hits_addend=hits)
    for entries in descriptors:
        descriptor = message.descriptors.add()
        for key, value in entries:
            descriptor.entries.append(ratelimit_pb2.RateLimitDescriptor.Entry(key=key, value=value))
    return message


def test_hits_addend_defaults_to_one_and_descriptor_value_wins() -> None:
    message = request([("k", "v")], [("k", "w")])
    message.descriptors[1].hits_addend.value = 0
    assert parse_request(message) == [([("k", "v")], 1), ([("k", "w")], 0)]
    message.hits_addend = 4
    assert [hits for _, hits in parse_request(message)] == [4, 0]


@pytest.mark.security(stride="T", asvs=("V2.2",))
@pytest.mark.parametrize(
    ("message", "fault"),
    [
        (request([("k", "v")], domain=""), "domain"),
        (request([("k", "v")], domain="d" * 129), "domain"),
        (request(), "descriptors must hold"),
        (request(*[[("k", "v")]] * 17), "descriptors must hold"),
        (request([]), "descriptors[0] must hold 1 to 8 entries"),
        (request([("k", str(i)) for i in range(9)]), "entries"),
        (request([("", "v")]), "entry keys"),
        (request([("k", "")]), "entry values"),
        (request([("k", "v" * 10_000)]), "entry values"),
        (request([("k", "v")], hits=1001), "hits_addend"),
    ],
)
def test_hostile_or_malformed_requests_are_rejected(message: Any, fault: str) -> None:
    with pytest.raises(InvalidRequestError, match=fault.replace("[", r"\[").replace("]", r"\]")):
        parse_request(message)


@pytest.mark.parametrize(
    ("window", "unit"),
    [
        (1, Unit.SECOND),
        (60, Unit.MINUTE),
        (3600, Unit.HOUR),
        (86400, Unit.DAY),
        (900, Unit.UNKNOWN),
    ],
)
def test_describe_limit(window: int, unit: int) -> None:
    described = describe_limit(RateLimit(requests=5, window_seconds=window))
    assert (described.requests_per_unit, described.unit) == (5, unit)
    assert described.name == f"5 per {window}s"
