"""One login bucket is one account: the rate limiter's identity normalisation agrees with the
auth service's account key, so one user can neither spend nor clear another's failures."""

import pytest

from bulwark.auth.users.rules import normalise_email
from bulwark.ratelimit.rules import normalize_identity

pytestmark = pytest.mark.security(stride="S", asvs=("V2.4", "V6.3"))

# Pairs the auth service keeps as two accounts, and pairs it merges into one.
DISTINCT = [
    ("strasse@example.com", "straße@example.com"),
    ("\u03c3@example.com", "\u03c2@example.com"),  # sigma, final sigma
]
SAME = [
    (" Alice@Example.COM ", "alice@example.com"),
    ("\uff41lice@example.com", "alice@example.com"),  # fullwidth a
    ("e\u0301@example.com", "\u00e9@example.com"),  # combining accent
    ("\ufb01@example.com", "fi@example.com"),  # the fi ligature: NFKC
]


@pytest.mark.parametrize(("first", "second"), DISTINCT + SAME)
def test_a_bucket_is_shared_exactly_when_the_account_is(first: str, second: str) -> None:
    same_account = normalise_email(first) == normalise_email(second)
    same_bucket = normalize_identity(normalise_email(first)) == normalize_identity(
        normalise_email(second)
    )
    assert same_bucket == same_account


@pytest.mark.parametrize("email", [a for pair in DISTINCT + SAME for a in pair])
def test_the_limiter_keeps_the_auth_key_as_it_is(email: str) -> None:
    key = normalise_email(email)
    assert normalize_identity(key) == key
