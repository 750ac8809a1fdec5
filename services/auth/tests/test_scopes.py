"""Scope on refresh (RFC 6749 §6, §3.3 syntax)."""

import pytest

from bulwark.auth.oauth.scopes import InvalidScope, narrowed

pytestmark = pytest.mark.security(stride="E", asvs=("V10.4", "V8.2"))


def test_no_scope_asked_is_the_whole_grant() -> None:
    assert narrowed(None, "api notes:read") == "api notes:read"


def test_the_grant_or_less_is_granted_in_the_order_asked() -> None:
    assert narrowed("notes:read", "api notes:read") == "notes:read"
    assert narrowed("notes:read api", "api notes:read") == "notes:read api"
    assert narrowed("api api", "api notes:read") == "api"


def test_a_scope_beyond_the_grant_is_invalid() -> None:
    for requested in ("admin", "api admin", "API", "ap"):
        with pytest.raises(InvalidScope, match="exceeds"):
            narrowed(requested, "api notes:read")


def test_a_malformed_scope_is_invalid() -> None:
    for requested in (" api", "api ", "api  notes:read", 'a"b', "a\\b", "é", "api\tnotes:read"):
        with pytest.raises(InvalidScope, match="malformed"):
            narrowed(requested, "api notes:read")
