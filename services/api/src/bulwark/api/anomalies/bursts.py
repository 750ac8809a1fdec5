"""Burst detector: an account's requests per window against its usual rate, in Redis.

One Redis hash per user, ``{prefix}anomaly:burst:{<user id>}``, updated by one Lua script
(atomic across replicas; the window comes from Redis ``TIME``) that adds the requests an API
process counted since its last update (`observe_many`: one round trip for every account):

- ``count``: requests in the current window (``ANOMALY_BURST_WINDOW_SECONDS``, 60);
- ``baseline``: the usual rate, an exponentially weighted mean of the counts of the
  account's past *active* windows (``ANOMALY_BURST_ALPHA``, 0.05: each finished window
  weighs 5 %). Idle windows are skipped, so the baseline is "requests per minute when the
  app is in use". A finished window counts at most the threshold it had, so one burst barely
  moves it;
- a request is a burst when ``count > max(ANOMALY_BURST_FLOOR, ANOMALY_BURST_FACTOR x
  baseline)``; it is reported once, then the account is quiet for
  ``ANOMALY_BURST_COOLDOWN_SECONDS`` (one flag per burst, not one per request).

The hash expires after a week without requests: the account then starts again at the floor.
"""

import math
from collections.abc import Mapping

import msgspec
import redis.asyncio

#: Seconds the state of an idle account is kept.
STATE_TTL = 7 * 86400

_OBSERVE = """
local now = redis.call('TIME')
local window_seconds = tonumber(ARGV[1])
local floor, factor, alpha = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local window = math.floor(tonumber(now[1]) / window_seconds)
local state = redis.call('HMGET', KEYS[1], 'window', 'count', 'baseline', 'quiet_until')
local current = tonumber(state[1])
local count = tonumber(state[2]) or 0
local baseline = tonumber(state[3]) or 0
local quiet_until = tonumber(state[4]) or 0
if current ~= window then
  if current ~= nil then
    local cap = math.max(floor, factor * baseline)
    baseline = baseline + alpha * (math.min(count, cap) - baseline)
  end
  count = 0
end
count = count + tonumber(ARGV[7])
local threshold = math.max(floor, factor * baseline)
local burst = 0
if count > threshold and window >= quiet_until then
  burst = 1
  quiet_until = window + tonumber(ARGV[5])
end
redis.call('HSET', KEYS[1], 'window', window, 'count', count,
           'baseline', tostring(baseline), 'quiet_until', quiet_until)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
return {burst, count, tostring(baseline), tostring(threshold)}
"""


class Burst(msgspec.Struct, frozen=True):
    """Requests that made their window a burst: the count so far in the window (with the
    batch that crossed the threshold), the usual rate and the threshold crossed (requests
    per window)."""

    requests: int
    baseline: float
    threshold: float


class BurstCounter:
    """Counts each request of an account and reports the first one of a burst."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        key_prefix: str,
        window_seconds: int,
        floor: int,
        factor: float,
        alpha: float,
        cooldown_seconds: int,
    ) -> None:
        """Count in ``client`` under ``key_prefix``; the parameters are the settings'
        ``anomaly_burst_*`` (module docstring)."""
        self._prefix = key_prefix
        self._client = client
        self._script = client.register_script(_OBSERVE)
        quiet_windows = max(1, math.ceil(cooldown_seconds / window_seconds))
        ttl = max(STATE_TTL, cooldown_seconds + window_seconds)
        self._args = [window_seconds, floor, factor, alpha, quiet_windows, ttl]

    def key(self, user_id: str) -> str:
        """The Redis hash of ``user_id``: ``{prefix}anomaly:burst:{<user id>}``."""
        return f"{self._prefix}anomaly:burst:{{{user_id}}}"

    async def observe(self, user_id: str, requests: int = 1) -> Burst | None:
        """Count ``requests`` of ``user_id``; the burst when they start one.

        Raises:
            redis.exceptions.RedisError, OSError: Redis failed.
        """
        return _burst(await self._script(keys=[self.key(user_id)], args=[*self._args, requests]))

    async def observe_many(self, requests: Mapping[str, int]) -> dict[str, Burst]:
        """Count ``requests[user_id]`` requests of each user, in one pipelined round trip;
        the bursts they start, by user id.

        Raises:
            redis.exceptions.RedisError, OSError: Redis failed.
        """
        async with self._client.pipeline(transaction=False) as pipe:
            for user_id, count in requests.items():
                await self._script(keys=[self.key(user_id)], args=[*self._args, count], client=pipe)
            results = await pipe.execute()
        bursts = zip(requests, map(_burst, results), strict=True)
        return {user_id: burst for user_id, burst in bursts if burst is not None}


def _burst(result: list[bytes | int]) -> Burst | None:
    burst, count, baseline, threshold = result
    if not burst:
        return None
    return Burst(requests=int(count), baseline=float(baseline), threshold=float(threshold))
