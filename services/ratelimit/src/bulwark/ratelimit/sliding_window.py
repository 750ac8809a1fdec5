"""Exact sliding-window log in Redis: one atomic Lua script per request, timed by Redis.

Each limited descriptor owns one sorted set holding one member per counted hit, scored by the
Redis ``TIME`` (microseconds) at which it was counted. A request is judged in one script run:
every set is trimmed to the window, and only if *every* descriptor has room for its hits are
the hits added, to all of them. A denied request therefore consumes nothing anywhere, and any
number of service replicas behave as one. Memory per key is bounded by its limit.
"""

import asyncio
from collections.abc import Sequence
from typing import NamedTuple

import redis.asyncio
import redis.exceptions

from bulwark.common.logging import get_logger
from bulwark.ratelimit.rules import Policy, RateLimit

log = get_logger(__name__)

# Lua numbers are doubles: microsecond timestamps (~1.7e15) are exact, but Lua's default
# number-to-string conversion keeps 14 digits, so every number sent to Redis goes through %d.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function int(x) return string.format('%d', x) end
local counts, pending, need, admit = {}, {}, {}, true
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[3 * i - 1]) * 1000000
  redis.call('ZREMRANGEBYSCORE', key, '-inf', int(now - window))
  counts[i] = redis.call('ZCARD', key)
  pending[key] = (pending[key] or 0) + tonumber(ARGV[3 * i])
end
for i, key in ipairs(KEYS) do
  -- hits_addend 0 is a check: "would one more hit be admitted?"
  need[i] = math.max(pending[key], 1)
  if counts[i] + need[i] > tonumber(ARGV[3 * i - 2]) then admit = false end
end
if admit then
  for i, key in ipairs(KEYS) do
    if pending[key] > 0 then
      local seq = 0
      for _ = 1, pending[key] do
        repeat seq = seq + 1
        until redis.call('ZADD', key, 'NX', int(now), int(now) .. ':' .. seq) == 1
      end
      redis.call('PEXPIRE', key, int(tonumber(ARGV[3 * i - 1]) * 1000))
      pending[key] = 0
    end
  end
end
local out = {}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[3 * i - 2])
  local window = tonumber(ARGV[3 * i - 1]) * 1000000
  local over = counts[i] + need[i] > limit
  -- Reset: when the oldest counted hit leaves the window or, if over the limit, when enough
  -- hits have left for this request to fit.
  local index = 0
  if over then index = math.max(math.min(counts[i] + need[i] - limit, counts[i]) - 1, 0) end
  local oldest = redis.call('ZRANGE', key, index, index, 'WITHSCORES')
  local reset_ms = 0
  if oldest[2] then reset_ms = math.ceil((tonumber(oldest[2]) + window - now) / 1000) end
  out[3 * i - 2] = over and 1 or 0
  out[3 * i - 1] = math.max(limit - redis.call('ZCARD', key), 0)
  out[3 * i] = reset_ms
end
return out
"""


class LimiterUnavailableError(Exception):
    """Redis could not be reached or did not answer within the timeout."""


class Hit(NamedTuple):
    """One limited descriptor of a request: its Redis key, its limit, hits to add (>= 0).

    The optional fields are read by `bulwark.ratelimit.limiter.Limiter` only: ``policy`` the
    matched rule (None: a plain sliding log of ``limit``), ``member`` the value a ``distinct``
    rule counts, ``reset`` a reset action on a ``backoff`` key.
    """

    key: str
    limit: RateLimit
    hits_addend: int
    policy: "Policy | None" = None
    member: str = ""
    reset: bool = False


class WindowState(NamedTuple):
    """Outcome for one descriptor.

    Attributes:
        over_limit: the descriptor had no room; nothing was counted anywhere.
        remaining: hits still allowed in the window after this request.
        reset_ms: milliseconds until the oldest counted hit leaves the window or, when over
            the limit, until enough hits have left for this request to fit; 0 if none counted.
    """

    over_limit: bool
    remaining: int
    reset_ms: int


class SlidingWindowLimiter:
    """Counts hits in Redis with the sliding-window log script (run with EVALSHA)."""

    def __init__(self, client: "redis.asyncio.Redis", timeout_seconds: float) -> None:
        """Register the script on ``client``; ``timeout_seconds`` bounds each call."""
        self._script = client.register_script(_SCRIPT)
        self._timeout = timeout_seconds

    async def hit(self, hits: Sequence[Hit]) -> list[WindowState]:
        """Judge and, if every descriptor has room, count all ``hits`` atomically.

        A descriptor with ``hits_addend`` 0 is only checked: it is over the limit when one
        more hit would not fit. Returns one `WindowState` per hit, in order.

        Raises:
            LimiterUnavailableError: Redis failed or took longer than the timeout (logged here).
        """
        if not hits:
            return []
        args: list[int] = []
        for hit in hits:
            args += [hit.limit.requests, hit.limit.window_seconds, hit.hits_addend]
        try:
            async with asyncio.timeout(self._timeout):
                raw = await self._script(keys=[hit.key for hit in hits], args=args)
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            log.warning("redis_unavailable", error=type(exc).__name__)
            raise LimiterUnavailableError(type(exc).__name__) from exc
        values = [int(value) for value in raw]
        return [
            WindowState(bool(values[i]), values[i + 1], values[i + 2])
            for i in range(0, len(values), 3)
        ]
