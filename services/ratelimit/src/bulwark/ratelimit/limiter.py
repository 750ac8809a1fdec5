"""All rule algorithms in one atomic Lua script per request, timed by Redis ``TIME``.

One script run judges every limited descriptor of a request, then counts the hits only if none
(shadow rules aside) is over its limit, so a denied request consumes nothing anywhere and any
number of replicas behave as one. Per descriptor, by its rule's kind (docs/ratelimit.md):

- ``sliding_log``: exact; a sorted set with one member per counted hit (memory O(limit)).
- ``sliding_counter``: a hash of two fixed-window counters, the previous one weighted by how
  much of it still overlaps the sliding window (Cloudflare's estimate; memory O(1)).
- ``distinct``: an exact set of the distinct values (e.g. emails) seen in the window, scored by
  last sight; a value already in the set is always admitted, a new one only while there is room.
- ``backoff``: a hash holding the failures' times, the current block's end and the strike count.
- reset: deletes a ``backoff`` key (a reset action); never over.
- refund: gives back one counted hit: the newest failure time of a ``backoff`` key, the
  value of a ``distinct`` key, the newest hit of a ``sliding_log`` key (a refund action);
  never over.
"""

import asyncio
from collections.abc import Sequence
from typing import NamedTuple

import redis.asyncio
import redis.asyncio.cluster
import redis.exceptions

from bulwark.common.logging import get_logger
from bulwark.ratelimit.rules import Action, Policy, RateLimit

log = get_logger(__name__)


class LimiterUnavailableError(Exception):
    """Redis could not be reached or did not answer within the timeout."""


class Hit(NamedTuple):
    """One limited descriptor of a request: its Redis key, its limit, hits to add (>= 0).

    The optional fields are read by `Limiter` only: ``policy`` the
    matched rule (None: a plain sliding log of ``limit``), ``member`` the value a ``distinct``
    rule counts, ``action`` a reset or refund action instead of a hit to judge.
    """

    key: str
    limit: RateLimit
    hits_addend: int
    policy: "Policy | None" = None
    member: str = ""
    action: Action | None = None


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


KINDS = {"sliding_log": 1, "sliding_counter": 2, "distinct": 3, "backoff": 4}
ACTION_KINDS = {"reset": 5, "refund": 6}
_STRIDE = 7  # ARGV per key: kind, limit, window_s, hits, shadow, p1, p2

# Lua numbers are doubles: microsecond timestamps (~1.7e15) are exact, but Lua's default
# number-to-string conversion keeps 14 digits, so every number sent to Redis goes through %d.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now / 1000)
local function int(x) return string.format('%d', x) end
local n = #KEYS
local kind, limit, win, hits, shadow = {}, {}, {}, {}, {}
local over, count, pending, st = {}, {}, {}, {}
for i, key in ipairs(KEYS) do
  local b = 7 * (i - 1)
  kind[i] = tonumber(ARGV[b + 1]); limit[i] = tonumber(ARGV[b + 2])
  win[i] = tonumber(ARGV[b + 3]) * 1000000; hits[i] = tonumber(ARGV[b + 4])
  shadow[i] = ARGV[b + 5] == '1'
  over[i] = false
  local k = kind[i]
  if k == 1 then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', int(now - win[i]))
    count[i] = redis.call('ZCARD', key)
    pending[key] = (pending[key] or 0) + hits[i]
  elseif k == 2 then
    local wms = win[i] / 1000
    local h = redis.call('HMGET', key, 'w', 'c', 'p')
    local cw = math.floor(now_ms / wms)
    local w, c, p = tonumber(h[1]), tonumber(h[2]) or 0, tonumber(h[3]) or 0
    if w == nil or w < cw - 1 then c, p = 0, 0 elseif w == cw - 1 then p, c = c, 0 end
    local e = now_ms - cw * wms
    st[i] = {cw = cw, c = c, p = p, e = e, wms = wms}
    local est = p * (wms - e) / wms + c
    over[i] = est + math.max(hits[i], 1) > limit[i]
  elseif k == 3 then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', int(now - win[i]))
    local member = ARGV[b + 6]
    local present = redis.call('ZSCORE', key, member)
    count[i] = redis.call('ZCARD', key)
    st[i] = {member = member, present = present}
    over[i] = (not present) and count[i] + 1 > limit[i]
  elseif k == 4 then
    local h = redis.call('HMGET', key, 'u', 's', 'f')
    local u, s = tonumber(h[1]) or 0, tonumber(h[2]) or 0
    local f = {}
    if h[3] then
      for ts in string.gmatch(h[3], '%d+') do
        if tonumber(ts) > now - win[i] then f[#f + 1] = tonumber(ts) end
      end
    end
    -- 'starts': this call's failures go past the limit, so it starts a block
    local starts = u <= now and hits[i] > 0 and #f + hits[i] > limit[i]
    st[i] = {u = u, s = s, f = f, block = tonumber(ARGV[b + 6]) * 1000000,
             max = tonumber(ARGV[b + 7]) * 1000000, starts = starts}
    over[i] = u > now or starts
  end
end
-- admit: nothing is over; blocking: what is over only starts blocks (those are written, the
-- rest of the call is not: a refusal counts nothing but the failure that starts a block)
local admit, blocking = true, true
for i, key in ipairs(KEYS) do
  if kind[i] == 1 then
    over[i] = count[i] + math.max(pending[key], 1) > limit[i]
  end
  if over[i] and not shadow[i] then
    admit = false
    if not (kind[i] == 4 and st[i].starts) then blocking = false end
  end
end
local done = {}
for i, key in ipairs(KEYS) do
  local k = kind[i]
  local write = admit and hits[i] > 0 and not over[i]
  if k == 5 then
    redis.call('DEL', key)
  elseif k == 6 and ARGV[7 * i] == '3' then
    redis.call('ZREM', key, ARGV[7 * i - 1])
  elseif k == 6 and ARGV[7 * i] == '1' then
    redis.call('ZPOPMAX', key)
  elseif k == 6 then
    local f = redis.call('HGET', key, 'f')
    if f and f ~= '' then
      local kept = string.match(f, '^(.*) %d+$') or ''
      redis.call('HSET', key, 'f', kept)
    end
  elseif k == 1 and write and not done[key] then
    local seq = 0
    for _ = 1, pending[key] do
      repeat seq = seq + 1
      until redis.call('ZADD', key, 'NX', int(now), int(now) .. ':' .. seq) == 1
    end
    redis.call('PEXPIRE', key, int(win[i] / 1000))
    done[key] = true
  elseif k == 2 and write then
    local s = st[i]
    s.c = s.c + hits[i]
    redis.call('HSET', key, 'w', int(s.cw), 'c', int(s.c), 'p', int(s.p))
    redis.call('PEXPIRE', key, int(2 * s.wms))
  elseif k == 3 and write then
    redis.call('ZADD', key, int(now), st[i].member)
    redis.call('PEXPIRE', key, int(win[i] / 1000))
  elseif k == 4 and (write or (st[i].starts and (shadow[i] and admit or blocking))) then
    local s = st[i]
    if s.starts then
      s.started = true
      s.s = s.s + 1
      s.u = now + math.min(s.block * 2 ^ (s.s - 1), s.max)
      s.f = {}
    else
      for _ = 1, hits[i] do s.f[#s.f + 1] = now end
    end
    local parts = {}
    for j, ts in ipairs(s.f) do parts[j] = int(ts) end
    redis.call('HSET', key, 'u', int(s.u), 's', int(s.s), 'f', table.concat(parts, ' '))
    redis.call('PEXPIRE', key, int(math.max(win[i], s.u - now + s.max) / 1000))
  end
end
local out = {}
for i, key in ipairs(KEYS) do
  local k = kind[i]
  local remaining, reset_ms = 0, 0
  if k == 1 then
    local need = math.max(pending[key], 1)
    local index = 0
    if over[i] then index = math.max(math.min(count[i] + need - limit[i], count[i]) - 1, 0) end
    local oldest = redis.call('ZRANGE', key, index, index, 'WITHSCORES')
    if oldest[2] then reset_ms = math.ceil((tonumber(oldest[2]) + win[i] - now) / 1000) end
    remaining = limit[i] - redis.call('ZCARD', key)
  elseif k == 2 then
    local s = st[i]
    local weighted = s.p * (s.wms - s.e) / s.wms
    local est = weighted + s.c
    remaining = math.floor(limit[i] - est)
    if over[i] then
      local excess = est + math.max(hits[i], 1) - limit[i]
      if s.p > 0 and excess <= weighted then
        reset_ms = math.ceil(excess * s.wms / s.p)
      else
        reset_ms = s.wms - s.e
      end
    elseif s.c > 0 or s.p > 0 then
      reset_ms = s.wms - s.e
    end
  elseif k == 3 then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if oldest[2] then reset_ms = math.ceil((tonumber(oldest[2]) + win[i] - now) / 1000) end
    remaining = limit[i] - redis.call('ZCARD', key)
  elseif k == 4 then
    local s = st[i]
    -- refused by another rule first: this failure was not counted and started nothing
    if s.starts and not s.started and not shadow[i] then over[i] = false end
    if s.u > now then
      reset_ms = math.ceil((s.u - now) / 1000)
    else
      remaining = limit[i] - #s.f
      if s.f[1] then reset_ms = math.ceil((s.f[1] + win[i] - now) / 1000) end
    end
  end
  out[3 * i - 2] = over[i] and 1 or 0
  out[3 * i - 1] = math.max(remaining, 0)
  out[3 * i] = math.max(reset_ms, 0)
end
return out
"""


class Limiter:
    """Runs the script above with EVALSHA; one round trip per request."""

    def __init__(
        self,
        client: "redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster",
        timeout_seconds: float,
    ) -> None:
        """Register the script on ``client``; ``timeout_seconds`` bounds each call."""
        self._script = client.register_script(_SCRIPT)
        self._timeout = timeout_seconds

    async def hit(self, hits: Sequence[Hit]) -> list[WindowState]:
        """Judge every hit and, if none (shadow rules aside) is over, count them all.

        A hit without a ``policy`` is a plain sliding log of its ``limit`` (as
        `Limiter.hit`). Returns one `WindowState` per hit, in order. For a
        ``backoff`` hit, ``over_limit`` is true while blocked, and also when this call's
        failure started a block (the failure was counted); ``reset_ms`` is then the time left
        in the block. For ``shadow_mode`` rules ``over_limit`` is the decision that would have
        been made; they never deny. A reset or refund action (``Hit.action``) is never over.

        Raises:
            LimiterUnavailableError: Redis failed or took longer than the timeout (logged here).
        """
        if not hits:
            return []
        args: list[int | str] = []
        for hit in hits:
            policy = hit.policy
            backoff = None if policy is None else policy.backoff
            kind = KINDS["sliding_log" if policy is None else policy.kind]
            args += [
                kind if hit.action is None else ACTION_KINDS[hit.action],
                hit.limit.requests,
                hit.limit.window_seconds,
                hit.hits_addend,
                int(policy is not None and policy.shadow_mode),
                hit.member if backoff is None else backoff.block_seconds,
                # An action names the kind of key it acts on.
                kind if hit.action else (0 if backoff is None else backoff.max_block_seconds),
            ]
        try:
            async with asyncio.timeout(self._timeout):
                raw = await self._script(keys=[hit.key for hit in hits], args=args)
        except Exception as exc:
            # Whatever the client raises is a Redis failure to answer by the failure modes:
            # besides RedisError, OSError and TimeoutError, redis-py can raise AttributeError
            # or IndexError from a connection torn down under a running call.
            log.warning("redis_unavailable", error=type(exc).__name__)
            raise LimiterUnavailableError(type(exc).__name__) from exc
        values = [int(value) for value in raw]
        return [
            WindowState(bool(values[i]), values[i + 1], values[i + 2])
            for i in range(0, len(values), 3)
        ]
