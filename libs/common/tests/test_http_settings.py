"""``HTTP_*`` settings: the HTTP server's limits (docs/http-limits.md)."""

from __future__ import annotations

import pytest

from bulwark.common.http import HttpLimits
from bulwark.common.settings import SettingsError, env_http_limits


def test_defaults() -> None:
    assert env_http_limits({}) == HttpLimits(
        max_header_bytes=16384, max_headers=100, header_timeout=10.0, body_timeout=30.0
    )


def test_overrides() -> None:
    limits = env_http_limits(
        {
            "HTTP_MAX_HEADER_BYTES": "8192",
            "HTTP_MAX_HEADERS": "50",
            "HTTP_HEADER_TIMEOUT_SECONDS": "1",
            "HTTP_BODY_TIMEOUT_SECONDS": "2.5",
        }
    )
    assert limits == HttpLimits(
        max_header_bytes=8192, max_headers=50, header_timeout=1.0, body_timeout=2.5
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HTTP_MAX_HEADER_BYTES", "512"),
        ("HTTP_MAX_HEADER_BYTES", "16k"),
        ("HTTP_MAX_HEADERS", "8"),
        ("HTTP_HEADER_TIMEOUT_SECONDS", "0"),
        ("HTTP_BODY_TIMEOUT_SECONDS", "soon"),
    ],
)
def test_malformed_or_too_small_values_are_refused(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        env_http_limits({name: value})
