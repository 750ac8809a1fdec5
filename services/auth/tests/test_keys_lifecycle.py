"""The key state machine: next -> active -> retiring -> removed, with its timing rules, and
revocation (pure functions; no files)."""

import pytest

from bulwark.auth.keys import SigningKeys, StoredKey, generate_key
from bulwark.auth.keys.lifecycle import (
    KeyChange,
    KeyLifecycleError,
    KeyTiming,
    plan_generate,
    plan_retire,
    plan_revoke,
    plan_rotate,
)

pytestmark = pytest.mark.security(stride="S", asvs=("V11", "V9.1"))

T0 = 1_800_000_000
TIMING = KeyTiming(jwks_max_age=300, access_token_ttl=900)


def applied(keys: list[StoredKey], change: KeyChange) -> list[StoredKey]:
    """``keys`` after ``change``, as ``apply_change`` would leave the folder."""
    written = {key.kid: key for key in change.writes}
    kept = [written.pop(key.kid, key) for key in keys if key.kid not in change.deletes]
    return kept + list(written.values())


def state_of(keys: list[StoredKey], kid: str) -> str | None:
    return next((key.state for key in keys if key.kid == kid), None)


def test_timing_rules_in_seconds() -> None:
    assert TIMING.publish_wait == 1 + 300 + 1
    assert TIMING.retire_wait == 1 + 900 + 60 + 300 + 1


def test_first_key_is_active_later_keys_are_next() -> None:
    keys = applied([], plan_generate([], "production", now=T0))
    assert [key.state for key in keys] == ["active"]
    assert keys[0].activated_at == T0
    keys = applied(keys, plan_generate(keys, "production", alg="RS256", now=T0 + 5))
    (pending,) = [key for key in keys if key.state == "next"]
    assert pending.alg == "RS256"
    assert pending.published_at == T0 + 5
    assert pending.activated_at is None


def test_generate_refuses_a_second_next_key_and_another_environment() -> None:
    keys = applied([], plan_generate([], "staging", now=T0))
    keys = applied(keys, plan_generate(keys, "staging", now=T0))
    with pytest.raises(KeyLifecycleError, match="already next"):
        plan_generate(keys, "staging", now=T0)
    with pytest.raises(KeyLifecycleError, match="staging keys, not production"):
        plan_generate(keys, "production", now=T0)


def test_rotate_waits_one_jwks_cache_lifetime_after_publication() -> None:
    keys = applied([], plan_generate([], "production", now=T0))
    keys = applied(keys, plan_generate(keys, "production", now=T0 + 10))
    too_early = T0 + 10 + TIMING.publish_wait - 1
    with pytest.raises(KeyLifecycleError, match="--force"):
        plan_rotate(keys, TIMING, now=too_early)
    assert plan_rotate(keys, TIMING, now=too_early, force=True).writes


def test_rotate_moves_every_key_one_state_on() -> None:
    (first,) = applied([], plan_generate([], "production", now=T0))
    keys = applied([first], plan_generate([first], "production", now=T0))
    (second,) = [key for key in keys if key.state == "next"]
    now = T0 + TIMING.publish_wait
    change = plan_rotate(keys, TIMING, now=now)
    rotated = applied(keys, change)
    assert state_of(rotated, first.kid) == "retiring"
    assert state_of(rotated, second.kid) == "active"
    (third,) = [key for key in rotated if key.state == "next"]
    assert third.published_at == now
    retired = next(key for key in rotated if key.kid == first.kid)
    assert retired.retired_at == now
    assert next(key for key in rotated if key.kid == second.kid).activated_at == now
    assert len({key.kid for key in rotated}) == 3
    assert SigningKeys(rotated, "production").active_kid == second.kid


def test_rotate_without_a_next_key_is_refused() -> None:
    keys = applied([], plan_generate([], "production", now=T0))
    with pytest.raises(KeyLifecycleError, match="no next key"):
        plan_rotate(keys, TIMING, now=T0 + 10_000, force=True)


def test_retire_removes_a_key_only_after_its_tokens_expired() -> None:
    keys = applied([], plan_generate([], "production", now=T0))
    keys = applied(keys, plan_generate(keys, "production", now=T0))
    rotated_at = T0 + TIMING.publish_wait
    keys = applied(keys, plan_rotate(keys, TIMING, now=rotated_at))
    (old,) = [key for key in keys if key.state == "retiring"]
    waiting = plan_retire(keys, TIMING, now=rotated_at + TIMING.retire_wait - 1)
    assert waiting.deletes == ()
    assert "1 s more" in waiting.messages[0]
    due = plan_retire(keys, TIMING, now=rotated_at + TIMING.retire_wait)
    assert due.deletes == (old.kid,)
    assert {key.state for key in applied(keys, due)} == {"active", "next"}


def test_revoking_the_active_key_promotes_next_at_once() -> None:
    keys = applied([], plan_generate([], "production", now=T0))
    keys = applied(keys, plan_generate(keys, "production", now=T0 + 1))
    active = next(key for key in keys if key.state == "active")
    pending = next(key for key in keys if key.state == "next")
    revoked = applied(keys, plan_revoke(keys, active.kid, now=T0 + 2))
    assert [key.kid for key in revoked] == [pending.kid]
    assert revoked[0].state == "active"
    assert revoked[0].activated_at == T0 + 2


def test_revoking_the_only_key_generates_a_new_active_of_the_same_alg() -> None:
    (only,) = applied([], plan_generate([], "production", alg="RS256", now=T0))
    (fresh,) = applied([only], plan_revoke([only], only.kid, now=T0 + 1))
    assert fresh.kid != only.kid
    assert (fresh.state, fresh.alg, fresh.environment) == ("active", "RS256", "production")


def test_revoking_a_next_or_retiring_key_only_removes_it() -> None:
    keys = [
        generate_key("test", state="active"),
        generate_key("test", state="next"),
        generate_key("test", state="retiring"),
    ]
    for victim in keys[1:]:
        change = plan_revoke(keys, victim.kid, now=T0)
        assert change.deletes == (victim.kid,)
        assert change.writes == ()
    with pytest.raises(KeyLifecycleError, match="no key"):
        plan_revoke(keys, "nope", now=T0)
