"""The limiter sends the script runs of one event-loop turn in one pipelined round trip
(issue 11), against real Redis: each run stays atomic and exact, a script Redis lost is
loaded again, and every caller keeps its own deadline."""

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
from redis.asyncio.client import Pipeline

from bulwark.ratelimit.limiter import Hit, Limiter, LimiterUnavailableError
from bulwark.ratelimit.rules import RateLimit


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    connection = redis.asyncio.Redis.from_url(redis_url)
    yield connection
    await connection.aclose()


def _count_round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the number of commands of each pipeline the limiter sends."""
    sent: list[int] = []
    real = Pipeline.execute

    async def counted(self: Pipeline, raise_on_error: bool = True) -> Any:
        sent.append(len(self.command_stack))
        return await real(self, raise_on_error)

    monkeypatch.setattr(Pipeline, "execute", counted)
    return sent


async def test_concurrent_decisions_share_a_round_trip_and_stay_exact(
    client: redis.asyncio.Redis, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = _count_round_trips(monkeypatch)
    limiter = Limiter(client, timeout_seconds=2.0)
    shared = Hit(f"{key_prefix}shared", RateLimit(10, 60), 1)
    states = await asyncio.gather(*(limiter.hit([shared]) for _ in range(30)))
    assert sent == [30]
    assert sum(not state.over_limit for (state,) in states) == 10  # exactly the limit
    assert sorted(state.remaining for (state,) in states if not state.over_limit) == list(range(10))
    # Each call's own keys: 5 calls on 5 fresh keys are all admitted.
    fresh = await asyncio.gather(
        *(limiter.hit([Hit(f"{key_prefix}own:{n}", RateLimit(1, 60), 1)]) for n in range(5))
    )
    assert [state.over_limit for (state,) in fresh] == [False] * 5


async def test_a_batch_after_redis_lost_the_script_is_still_answered(
    client: redis.asyncio.Redis, key_prefix: str
) -> None:
    limiter = Limiter(client, timeout_seconds=2.0)
    await limiter.hit([Hit(f"{key_prefix}warm", RateLimit(5, 60), 1)])
    await client.script_flush()  # as a Redis restart does
    states = await asyncio.gather(
        *(limiter.hit([Hit(f"{key_prefix}after", RateLimit(3, 60), 1)]) for _ in range(4))
    )
    assert [state.over_limit for (state,) in states].count(False) == 3


async def test_each_caller_of_a_stalled_batch_gives_up_at_its_deadline() -> None:
    with socket.socket() as listener:  # accepts, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        stalled = redis.asyncio.Redis.from_url(
            f"redis://127.0.0.1:{listener.getsockname()[1]}/0", socket_timeout=5
        )
        limiter = Limiter(stalled, timeout_seconds=0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcomes = await asyncio.gather(
            *(limiter.hit([Hit(f"k{n}", RateLimit(1, 60), 1)]) for n in range(5)),
            return_exceptions=True,
        )
        assert loop.time() - started < 1.0
        assert all(isinstance(outcome, LimiterUnavailableError) for outcome in outcomes)
        await stalled.aclose()
