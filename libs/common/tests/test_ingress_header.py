"""Headers set by the ingress are believed only from a trusted proxy."""

import pytest

from bulwark.common.http import ingress_header, parse_trusted_proxies

pytestmark = pytest.mark.security(stride="S", asvs=("V4.1",))

TRUSTED = parse_trusted_proxies("10.0.0.0/8, ::1")


def _scope(peer: str | None) -> dict[str, object]:
    return {
        "client": (peer, 4711) if peer else None,
        "headers": [(b"cloudfront-viewer-country", b"DE")],
    }


def test_believed_from_a_trusted_peer() -> None:
    assert ingress_header(_scope("10.1.2.3"), b"cloudfront-viewer-country", TRUSTED) == "DE"
    assert ingress_header(_scope("::1"), b"cloudfront-viewer-country", TRUSTED) == "DE"
    assert ingress_header(_scope("::ffff:10.0.0.1"), b"cloudfront-viewer-country", TRUSTED)


def test_ignored_from_anyone_else() -> None:
    assert ingress_header(_scope("203.0.113.5"), b"cloudfront-viewer-country", TRUSTED) is None
    assert ingress_header(_scope(None), b"cloudfront-viewer-country", TRUSTED) is None
    assert ingress_header(_scope("10.1.2.3"), b"cloudfront-viewer-country", ()) is None
    assert ingress_header(_scope("not-an-ip"), b"cloudfront-viewer-country", TRUSTED) is None


def test_absent_header() -> None:
    assert ingress_header(_scope("10.1.2.3"), b"cf-ipcountry", TRUSTED) is None
