"""The revoked-session check batches the checks of one event-loop turn into one ``MGET``
against real Redis (issue 11), and each check keeps its own answer, its own deadline and the
marker's verdict."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bulwark.common.revocations import RevocationsUnavailable, SessionRevocations

pytestmark = pytest.mark.security(stride="ED", asvs=("V7.4", "V16.5"))


@pytest.fixture
async def revocations(redis_url: str) -> AsyncIterator[SessionRevocations]:
    listed = SessionRevocations(
        redis_url, key_prefix=f"bulwark:test:{uuid.uuid4().hex}:", timeout_seconds=1.0
    )
    yield listed
    await listed._redis.delete(listed.marker_key)
    await listed.aclose()


def _count_mgets(revocations: SessionRevocations, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the number of keys of each ``MGET`` the check sends to Redis."""
    sent: list[int] = []
    real = revocations._redis.mget

    async def counted(keys: list[str]) -> Any:
        sent.append(len(keys))
        return await real(keys)

    monkeypatch.setattr(revocations._redis, "mget", counted)
    return sent


async def test_concurrent_checks_share_one_round_trip_and_keep_their_answers(
    revocations: SessionRevocations, monkeypatch: pytest.MonkeyPatch
) -> None:
    await revocations.mark_complete()
    await revocations.revoke([("ended", 60)])
    await revocations.revoke_signing_keys(["stolen-kid"], 60)
    sent = _count_mgets(revocations, monkeypatch)
    answers = await asyncio.gather(
        revocations.is_revoked("live-1", "kid-1"),
        revocations.is_revoked("ended", "kid-1"),
        revocations.is_revoked("live-2"),
        revocations.is_revoked("live-3", "stolen-kid"),
        *(revocations.is_revoked(f"live-{n}", "kid-1") for n in range(4, 40)),
    )
    assert answers[:4] == [False, True, False, True]
    assert not any(answers[4:])
    assert sent == [1 + 2 + 2 + 1 + 2 + 36 * 2]  # the marker, then every check's keys


async def test_a_batch_without_the_marker_fails_live_sessions_only(
    revocations: SessionRevocations,
) -> None:
    await revocations.revoke([("ended", 60)])  # no marker: the set cannot be trusted
    live, ended = await asyncio.gather(
        revocations.is_revoked("live"), revocations.is_revoked("ended"), return_exceptions=True
    )
    assert isinstance(live, RevocationsUnavailable)
    assert ended is True


async def test_each_check_of_a_stalled_batch_gives_up_at_its_deadline() -> None:
    with socket.socket() as listener:  # accepts, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        stalled = SessionRevocations(
            f"redis://127.0.0.1:{listener.getsockname()[1]}/0",
            key_prefix="bulwark:test:",
            timeout_seconds=0.2,
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        answers = await asyncio.gather(
            *(stalled.is_revoked(f"s{n}") for n in range(5)), return_exceptions=True
        )
        assert loop.time() - started < 1.0
        assert all(isinstance(answer, RevocationsUnavailable) for answer in answers)
        await stalled.aclose()


async def test_any_client_error_reaches_every_check_of_the_batch_at_once(
    revocations: SessionRevocations, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py can raise AttributeError from a connection torn down mid-call: each waiting
    check is told at once (RevocationsUnavailable), not left to its deadline."""

    async def torn_down(keys: list[str]) -> Any:
        raise AttributeError("'NoneType' object has no attribute 'read'")

    monkeypatch.setattr(revocations._redis, "mget", torn_down)
    loop = asyncio.get_running_loop()
    started = loop.time()
    answers = await asyncio.gather(
        *(revocations.is_revoked(f"s{n}") for n in range(3)), return_exceptions=True
    )
    assert loop.time() - started < 0.5  # the timeout is 1 s
    assert all(isinstance(answer, RevocationsUnavailable) for answer in answers)


async def test_an_earlier_answer_arriving_after_a_raised_epoch_is_not_redis_going_back(
    revocations: SessionRevocations, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    """Under load, the auth service's resync raises the epoch while checks are in flight on
    other connections; the answer to a read sent before the raise (the old epoch) may be
    handled after a later read's (the new one). That is no proof Redis lost revocations: the
    check must not fail (it answered 503s in CI), while a read sent after the raise and
    answering the old epoch still is."""
    await revocations.mark_complete()
    real = revocations._redis.mget
    first_answered = asyncio.Event()
    second_handled = asyncio.Event()
    calls = 0

    async def reordered(keys: list[str]) -> Any:
        nonlocal calls
        calls += 1
        answer = await real(keys)
        if calls == 1:  # the earlier read: answered by Redis now, handled last
            first_answered.set()
            await second_handled.wait()
        return answer

    monkeypatch.setattr(revocations._redis, "mget", reordered)
    earlier = asyncio.create_task(revocations.is_revoked("live-1"))
    await first_answered.wait()
    auth = SessionRevocations(
        redis_url,
        key_prefix=revocations.marker_key.removesuffix("revoked:complete"),
        timeout_seconds=1.0,
    )
    try:
        await auth.revoke([("ended", 60)])  # the resync: raises the epoch
    finally:
        await auth.aclose()
    assert await revocations.is_revoked("live-2") is False  # reads the raised epoch
    second_handled.set()
    assert await earlier is False

    # A read sent after the raised epoch was seen that answers a lower one: Redis went back.
    monkeypatch.setattr(revocations._redis, "mget", real)
    raised = revocations.epoch_seen
    await revocations._redis.set(revocations.marker_key, str(raised - 1))
    with pytest.raises(RevocationsUnavailable):
        await revocations.is_revoked("live-3")
