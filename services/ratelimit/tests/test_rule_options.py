"""Unit tests (no I/O but the packaged file): rule options, line numbers, normalisation."""

import pytest

from bulwark.ratelimit.rules import (
    RateLimit,
    RulesError,
    load_rules,
    normalize_identity,
    parse_rules,
)
from bulwark.ratelimit.settings import packaged_rules_path

OPTIONS = """
domains:
  - domain: d
    descriptors:
      - key: ip
        algorithm: sliding_counter
        failure_mode: allow
        shadow_mode: true
        rate_limit: {requests: 600, window_seconds: 60}
      - key: email
        backoff: {failures: 5, window_seconds: 900, block_seconds: 60, max_block_seconds: 3600}
        failure_mode: deny
"""


def test_options_are_parsed_into_the_policy() -> None:
    rules = parse_rules(OPTIONS)
    ip = rules.resolve("d", [("ip", "1.2.3.4")])
    assert ip is not None
    assert ip.policy.kind == "sliding_counter"
    assert ip.policy.failure_mode == "allow"
    assert ip.policy.shadow_mode
    email = rules.resolve("d", [("email", "x@y")])
    assert email is not None
    assert email.policy.kind == "backoff"
    assert email.policy.limit == RateLimit(5, 900)
    assert email.policy.failure_mode == "deny"
    assert rules.match("d", [("email", "x@y")]) == RateLimit(5, 900)


def test_defaults_are_the_exact_log_and_fail_open() -> None:
    rules = parse_rules(
        "domains: [{domain: d, descriptors: [{key: k, rate_limit: "
        "{requests: 1, window_seconds: 1}}]}]"
    )
    match = rules.resolve("d", [("k", "v")])
    assert match is not None
    assert (match.policy.kind, match.policy.failure_mode, match.policy.shadow_mode) == (
        "sliding_log",
        "allow",
        False,
    )


@pytest.mark.security(stride="T", asvs=("V2.4",))
def test_reset_action_only_on_backoff_rules() -> None:
    rules = parse_rules(OPTIONS)
    reset = rules.resolve("d", [("email", " X@Y "), ("backoff", "reset")])
    assert reset is not None
    assert reset.action == "reset"
    assert reset.entries == [("email", "x@y")]
    assert rules.match("d", [("email", "x@y"), ("backoff", "reset")]) is None
    assert rules.resolve("d", [("ip", "1"), ("backoff", "reset")]) is None
    assert rules.resolve("d", [("email", "x@y"), ("backoff", "unknown")]) is None


def test_refund_action_only_on_backoff_distinct_and_sliding_log_rules() -> None:
    rules = load_rules(packaged_rules_path())
    failure = [("endpoint", "login_failure")]
    for entries in (
        [*failure, ("email", "A@x")],
        [*failure, ("remote_address", "192.0.2.1")],
        [*failure, ("remote_address", "192.0.2.1"), ("email", "A@x")],
    ):
        refund = rules.resolve("bulwark-auth", [*entries, ("backoff", "refund")])
        assert refund is not None
        assert refund.action == "refund"
    attempts = [("endpoint", "login"), ("email", "a@x"), ("backoff", "refund")]
    refund = rules.resolve("bulwark-auth", attempts)
    assert refund is not None
    assert refund.action == "refund"
    api = rules.resolve("bulwark-api", [("user_id", "u"), ("backoff", "reset")])
    assert api is None  # a reset stays a backoff rule's action


@pytest.mark.security(stride="S", asvs=("V2.4",))
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (" Alice@Example.COM ", "alice@example.com"),
        ("\uff21lice@example.com", "alice@example.com"),  # fullwidth A (NFKC)
        ("STRASSE@x", "strasse@x"),
        ("Straße@x", "straße@x"),  # lower(), not casefold(): another account, as in auth
        ("e\u0301@x", "\u00e9@x"),  # combining accent composed
    ],
)
def test_normalize_identity(value: str, expected: str) -> None:
    assert normalize_identity(value) == expected


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "domains:\n  - domain: d\n    descriptors:\n      - key: k\n"
            "        rate_limit: {requests: 1, window_seconds: 1}\n        algorithm: quick\n",
            6,
            "Invalid enum value 'quick'",
        ),
        (
            "domains:\n  - domain: d\n    descriptors:\n      - key: k\n"
            "        failure_mode: maybe\n        rate_limit: {requests: 1, window_seconds: 1}\n",
            5,
            "failure_mode",
        ),
        (
            "domains:\n  - domain: d\n    descriptors:\n      - key: k\n"
            "        shadow_mode: true\n",
            4,
            "need a rate_limit or backoff",
        ),
        (
            "domains:\n  - domain: d\n    descriptors:\n      - key: k\n"
            "        backoff: {failures: 5, window_seconds: 9, block_seconds: 60,"
            " max_block_seconds: 30}\n",
            5,
            "max_block_seconds must be >= block_seconds",
        ),
        (
            "domains:\n  - domain: d\n    descriptors:\n      - key: k\n"
            "        rate_limit: {requests: 1, window_seconds: 1}\n"
            "        backoff: {failures: 5, window_seconds: 9, block_seconds: 1,"
            " max_block_seconds: 30}\n",
            4,
            "either rate_limit or backoff",
        ),
        ("domains:\n  - domain: d\n    descriptors: []\n    limits: 3\n", 4, "`limits`"),
        ("domains:\n  - domain: d\n    descriptors:\n      - {key: k, value: 7}\n", 4, "value"),
    ],
)
def test_errors_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(RulesError) as info:
        parse_rules(text, "rules.yaml")
    assert str(info.value).startswith(f"rules.yaml: line {line}: ")
    assert message in str(info.value)


@pytest.mark.security(stride="S", asvs=("V2.4",))
def test_packaged_rules_hold_the_documented_backoff_protocol() -> None:
    """docs/ratelimit.md "Backoff protocol": the descriptors the auth service sends."""
    rules = load_rules(packaged_rules_path())
    failure = [("endpoint", "login_failure")]
    email = rules.resolve("bulwark-auth", [*failure, ("email", "A@x")])
    ip = rules.resolve("bulwark-auth", [*failure, ("remote_address", "192.0.2.1")])
    stuffing = rules.resolve(
        "bulwark-auth", [*failure, ("remote_address", "192.0.2.1"), ("email", "A@x")]
    )
    reset = rules.resolve("bulwark-auth", [*failure, ("email", "A@x"), ("backoff", "reset")])
    assert email is not None
    assert ip is not None
    assert stuffing is not None
    assert reset is not None
    assert email.policy.kind == ip.policy.kind == "backoff"
    assert stuffing.policy.kind == "distinct"
    assert reset.action == "reset"
    assert reset.entries == email.entries == [*failure, ("email", "a@x")]
    assert {email.policy.failure_mode, ip.policy.failure_mode, stuffing.policy.failure_mode} == {
        "deny"
    }


@pytest.mark.security(stride="S", asvs=("V2.4",))
@pytest.mark.parametrize(
    ("value", "bucket"),
    [
        ("2001:db8::1", "2001:db8::/64"),
        ("2001:db8:0:0:ffff:ffff:ffff:ffff", "2001:db8::/64"),
        ("2001:db8:0:1::1", "2001:db8:0:1::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("192.0.2.7", "192.0.2.7"),
        ("unknown", "unknown"),
    ],
)
def test_an_ipv6_client_is_one_64(value: str, bucket: str) -> None:
    """Rotating addresses inside one /64 gives no fresh per-IP bucket."""
    rules = load_rules(packaged_rules_path())
    match = rules.resolve("bulwark-api", [("remote_address", value)])
    assert match is not None
    assert match.entries == [("remote_address", bucket)]


@pytest.mark.security(stride="S", asvs=("V2.4",))
def test_packaged_backoff_blocks_are_reachable_under_the_attempt_limits() -> None:
    """Every failure is an attempt: a backoff rule whose window holds fewer attempts than the
    failures that start a block (failures + 1) could never block (with 5 attempts and 5
    failures per 15 minutes, the email backoff never fired)."""
    rules = load_rules(packaged_rules_path())
    for key, value in (("email", "a@x"), ("remote_address", "192.0.2.1")):
        attempts = rules.resolve("bulwark-auth", [("endpoint", "login"), (key, value)])
        backoff = rules.resolve("bulwark-auth", [("endpoint", "login_failure"), (key, value)])
        assert attempts is not None
        assert backoff is not None
        assert backoff.policy.backoff is not None
        per_window = attempts.policy.limit
        windows = -(-backoff.policy.limit.window_seconds // per_window.window_seconds)
        assert per_window.requests * windows >= backoff.policy.backoff.failures + 1, key
