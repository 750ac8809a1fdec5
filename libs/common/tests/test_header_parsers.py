"""The per-header parsers a request meets before any handler (X-Forwarded-For, Authorization,
X-Device-Id, X-App-Version, X-Platform): for any value they return a value or raise the
documented 4xx problem, never anything else, in time linear in the header's size."""

import contextlib
import re
import time
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from litestar import Request

from bulwark.common.access_tokens import bearer_token
from bulwark.common.http import (
    app_version,
    device_id,
    parse_trusted_proxies,
    platform,
    request_id_or_none,
    resolve_client_ip,
)
from bulwark.common.problems import Problem

pytestmark = pytest.mark.security(stride="TD", asvs=("V2.2", "V4.1"))

FUZZ = settings(max_examples=300, deadline=timedelta(seconds=1))
PROXIES = parse_trusted_proxies("10.0.0.0/8, 127.0.0.1, ::1, fd00::/8")
#: Header values as a server hands them over: any bytes but CR, LF and NUL, read as latin-1.
HEADER_VALUES = st.binary(max_size=300).map(
    lambda raw: raw.translate(None, b"\r\n\x00").decode("latin-1")
)
_HOPS = st.one_of(
    st.ip_addresses().map(str),
    st.sampled_from(["10.0.0.1", "::1", "fd00::1", "::ffff:10.0.0.1", "fe80::1%eth0", "", " "]),
    st.text(max_size=40),
)
FORWARDED_FOR = st.lists(st.lists(_HOPS, max_size=8).map(", ".join), max_size=4)


@FUZZ
@given(peer=st.none() | _HOPS, forwarded_for=FORWARDED_FOR)
def test_fuzz_the_client_address_is_an_address_or_the_peer(
    peer: str | None, forwarded_for: list[str]
) -> None:
    client = resolve_client_ip(peer, forwarded_for, PROXIES)
    if client is None:
        assert peer is None
    elif client != peer:
        assert re.fullmatch(r"[0-9a-fA-F:.]+(%\S*)?", client), client


@pytest.mark.parametrize("hop", ["10.0.0.1", "::1", "::ffff:10.0.0.1", "junk", ",", " "])
def test_a_huge_forwarded_for_costs_linear_time(hop: str) -> None:
    small, large = (",".join([hop] * count) for count in (1000, 8000))
    assert _seconds(resolve_client_ip, "10.0.0.1", [large], PROXIES) < 1.0
    ratio = _seconds(resolve_client_ip, "10.0.0.1", [large], PROXIES) / max(
        _seconds(resolve_client_ip, "10.0.0.1", [small], PROXIES), 1e-4
    )
    assert ratio < 40  # 8x the input: linear is ~8, quadratic ~64


def _scope(*headers: tuple[bytes, str], query: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": "/",
        "query_string": query,
        "headers": [(name, value.encode("latin-1")) for name, value in headers],
    }


@FUZZ
@given(value=HEADER_VALUES)
def test_fuzz_the_mobile_headers_are_their_shape_or_none(value: str) -> None:
    scope = _scope((b"x-device-id", value), (b"x-app-version", value), (b"x-platform", value))
    assert device_id(scope) in {None, value}
    assert app_version(scope) in {None, value}
    assert platform(scope) in {None, "ios", "android", "web"}
    assert request_id_or_none(value) in {None, value}


@FUZZ
@given(values=st.lists(HEADER_VALUES, max_size=3), query=st.binary(max_size=60))
def test_fuzz_the_bearer_token_is_a_token_or_a_4xx(values: list[str], query: bytes) -> None:
    request: Request[Any, Any, Any] = Request(
        _scope(*((b"authorization", value) for value in values), query=query)
    )
    try:
        token, status = bearer_token(request), None
    except Problem as problem:
        token, status = "", problem.status
    if status is None:
        assert token
        assert token == token.strip()
    else:
        assert status in {400, 401}


@pytest.mark.parametrize("value", ["a" * 100_000, "Bearer " + "a" * 100_000, "1" * 100_000])
def test_huge_mobile_and_authorization_headers_cost_little(value: str) -> None:
    scope = _scope((b"x-device-id", value), (b"x-app-version", value), (b"x-platform", value))
    request: Request[Any, Any, Any] = Request(_scope((b"authorization", value)))
    started = time.perf_counter()
    device_id(scope), app_version(scope), platform(scope), request_id_or_none(value)
    with contextlib.suppress(Problem):
        bearer_token(request)
    assert time.perf_counter() - started < 0.1


def test_a_final_newline_is_not_part_of_a_well_formed_header() -> None:
    """``$`` would match before a final newline; the shape checks end at the very end."""
    scope = _scope((b"x-device-id", "abc\n"), (b"x-app-version", "1.0\n"))
    assert (device_id(scope), app_version(scope), request_id_or_none("abc\n")) == (None,) * 3


def _seconds(function: Any, *args: Any) -> float:
    """The best of three runs (the machine is shared)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        function(*args)
        best = min(best, time.perf_counter() - started)
    return best
