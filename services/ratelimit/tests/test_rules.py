"""Unit tests (no I/O except reading the packaged file): rule loading, validation, matching."""

from pathlib import Path

import pytest

from bulwark.ratelimit.rules import RateLimit, RulesError, load_rules, parse_rules, redis_key
from bulwark.ratelimit.settings import packaged_rules_path

TREE = """
domains:
  - domain: d
    descriptors:
      - key: endpoint
        value: login
        rate_limit: {requests: 1, window_seconds: 1}
        descriptors:
          - key: email
            rate_limit: {requests: 5, window_seconds: 900}
      - key: endpoint
        rate_limit: {requests: 2, window_seconds: 60}
      - key: whitelisted
"""


@pytest.mark.security(stride="D", asvs=("V2.4",))
def test_packaged_rules_match_the_documented_limits() -> None:
    rules = load_rules(packaged_rules_path())
    login = [("endpoint", "login")]
    assert rules.match("bulwark-auth", [*login, ("email", "a@example.com")]) == RateLimit(5, 900)
    assert rules.match("bulwark-auth", [*login, ("remote_address", "10.0.0.1")]) == RateLimit(
        300, 900
    )
    assert rules.match("bulwark-auth", login) is None
    assert rules.match("bulwark-auth", [("endpoint", "signup"), ("email", "a@b.c")]) is None
    assert rules.match("bulwark-api", [("remote_address", "10.0.0.1")]) == RateLimit(600, 60)
    assert rules.match("bulwark-api", [("user_id", "u1")]) == RateLimit(300, 60)


def test_key_and_value_match_wins_over_key_only() -> None:
    rules = parse_rules(TREE)
    assert rules.match("d", [("endpoint", "login")]) == RateLimit(1, 1)
    assert rules.match("d", [("endpoint", "other")]) == RateLimit(2, 60)
    assert rules.match("d", [("endpoint", "login"), ("email", "x")]) == RateLimit(5, 900)


@pytest.mark.parametrize(
    "entries",
    [
        [],
        [("nope", "x")],
        [("whitelisted", "x")],  # node without rate_limit
        [("endpoint", "other"), ("email", "x")],  # key-only node has no children
        [("endpoint", "login"), ("email", "x"), ("extra", "y")],  # deeper than the tree
        [("email", "x")],  # right key at the wrong level
    ],
)
def test_unmatched_descriptors_are_unlimited(entries: list[tuple[str, str]]) -> None:
    assert parse_rules(TREE).match("d", entries) is None


def test_unknown_domain_matches_nothing() -> None:
    rules = parse_rules(TREE)
    assert not rules.has_domain("other")
    assert rules.match("other", [("endpoint", "login")]) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("domains: [{domain: d, descriptors: [], extra: 1}]", "unknown field `extra`"),
        ("domains: [{domain: d}]", "missing required field `descriptors`"),
        (
            "domains: [{domain: d, descriptors: [{key: k, rate_limit: {requests: 0, "
            "window_seconds: 1}}]}]",
            "$.domains[0].descriptors[0].rate_limit.requests",
        ),
        (
            "domains: [{domain: d, descriptors: [{key: k, rate_limit: {requests: 1, "
            "window_seconds: -5}}]}]",
            "window_seconds",
        ),
        (
            "domains: [{domain: d, descriptors: [{key: k, rate_limit: {requests: 1}}]}]",
            "missing required field `window_seconds`",
        ),
        ("domains: [{domain: d, descriptors: [{key: k, value: 123}]}]", "value"),
        ("domains: [{domain: 'a b', descriptors: []}]", "$.domains[0].domain"),
        ("domains: [{domain: d, descriptors: []}, {domain: d, descriptors: []}]", "'d'"),
        (
            "domains: [{domain: d, descriptors: [{key: k, value: v}, {key: k, value: v}]}]",
            "duplicate descriptor d > k=v",
        ),
        ("domains: [", "invalid YAML"),
        ("- just a list", "Expected `object`"),
        ("", "Expected `object`, got `null`"),
    ],
)
def test_invalid_rules_raise_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(RulesError) as info:
        parse_rules(text, "rules.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("rules.yaml: ")


def test_missing_rules_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read rules"):
        load_rules(tmp_path / "absent.yaml")


@pytest.mark.security(stride="T", asvs=("V1.2",))
def test_redis_keys_are_bounded_and_injection_free() -> None:
    short = redis_key("rl:", "d", [("k", "v")])
    hostile = redis_key("rl:", "d", [("k", "x" * 10_000)])
    assert short.startswith("rl:d:")
    assert len(short) == len(hostile) == len("rl:d:{}") + 64
    assert short.endswith("}")  # the digest is the Redis Cluster hash tag
    assert redis_key("rl:", "d", [("a", "b:c")]) != redis_key("rl:", "d", [("a:b", "c")])
    assert redis_key("rl:", "d", [("a", "b")]) != redis_key("rl:", "d", [("a", "b"), ("c", "d")])
    assert redis_key("rl:", "d", [("k", "v")]) == short
