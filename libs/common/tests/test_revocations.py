"""The revoked-session check's decisions, with a stand-in for Redis (no I/O)."""

import pytest

from bulwark.common.access_tokens import LEEWAY_SECONDS
from bulwark.common.problems import ServiceUnavailable, Unauthorized
from bulwark.common.revocations import (
    RevocationsUnavailable,
    SessionRevocations,
    ensure_session_live,
    entry_lifetime,
)

pytestmark = pytest.mark.security(stride="E", asvs=("V7.4",))


class StandIn:
    """Answers like Redis would: revoked sids, or unreachable."""

    def __init__(self, revoked: set[str] | None = None, *, down: bool = False) -> None:
        self.revoked, self.down, self.asked = revoked or set(), down, 0

    async def is_revoked(self, sid: str, kid: str = "") -> bool:
        self.asked += 1
        if self.down:
            raise RevocationsUnavailable("TimeoutError")
        return sid in self.revoked or kid in self.revoked


@pytest.mark.parametrize("fail_open", [True, False])
async def test_a_revoked_session_is_401_in_either_mode(fail_open: bool) -> None:
    with pytest.raises(Unauthorized) as raised:
        await ensure_session_live(StandIn({"s1"}), "s1", fail_open=fail_open)
    assert 'error="invalid_token"' in raised.value.headers["WWW-Authenticate"]


async def test_a_live_session_passes_with_one_lookup() -> None:
    redis = StandIn({"other"})
    await ensure_session_live(redis, "s1", fail_open=False)
    assert redis.asked == 1


@pytest.mark.security(stride="D", asvs=("V16.5",))
async def test_unreachable_redis_fails_closed_with_503_and_retry_after() -> None:
    with pytest.raises(ServiceUnavailable) as raised:
        await ensure_session_live(StandIn(down=True), "s1", fail_open=False)
    assert raised.value.headers == {"Retry-After": "5"}
    assert "redis" not in raised.value.detail.lower()


@pytest.mark.security(stride="D", asvs=("V16.5",))
async def test_unreachable_redis_fails_open_when_configured() -> None:
    await ensure_session_live(StandIn(down=True), "s1", fail_open=True)


def test_entries_outlive_every_access_token_of_the_session() -> None:
    assert entry_lifetime(900) == 900 + 2 * LEEWAY_SECONDS


def test_keys_are_prefixed_per_deployment() -> None:
    revocations = SessionRevocations(
        "redis://127.0.0.1:1/0", key_prefix="bulwark:test:", timeout_seconds=0.1
    )
    assert revocations.key("abc") == "bulwark:test:revoked:sid:abc"


@pytest.mark.security(stride="S", asvs=("V9.1",))
async def test_a_revoked_signing_key_is_401_whatever_the_session() -> None:
    with pytest.raises(Unauthorized):
        await ensure_session_live(StandIn({"kid-1"}), "live-sid", kid="kid-1", fail_open=True)
    await ensure_session_live(StandIn({"kid-1"}), "live-sid", kid="kid-2", fail_open=False)
