"""Detector of attempts at other users' notes, in Redis.

The notes API answers 404 alike for a note that does not exist and for another user's
(nothing leaks to the caller). The detector tells them apart afterwards: only a note that
exists and belongs to someone else counts. A missing id is what a stale cache or a note
deleted on another device produces; another user's id had to come from somewhere.

Per user, a counter ``{prefix}anomaly:foreign:{<user id>}:count`` that lives
``ANOMALY_FOREIGN_WINDOW_SECONDS`` from its first attempt (a fixed window), and the last
`KEPT_TARGETS` attempts as evidence. The attempt that reaches ``ANOMALY_FOREIGN_THRESHOLD``
reports a flag, once per window.
"""

from typing import Any

import msgspec
import redis.asyncio

#: Attempts kept as evidence, the newest ones.
KEPT_TARGETS = 10

_OBSERVE = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1])) end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
local ttl = redis.call('TTL', KEYS[1])
redis.call('EXPIRE', KEYS[2], math.max(ttl, 1))
if n == tonumber(ARGV[4]) then
  return {n, redis.call('LRANGE', KEYS[2], 0, -1)}
end
return {n, {}}
"""


class Probing(msgspec.Struct, frozen=True):
    """Attempts at others' notes that reached the threshold: how many in the window, and
    the newest ones (``note_id``, ``owner_id``, ``action``)."""

    attempts: int
    targets: list[dict[str, Any]]


class ProbeCounter:
    """Counts a user's attempts at other users' notes within a window."""

    def __init__(
        self, client: redis.asyncio.Redis, *, key_prefix: str, window_seconds: int, threshold: int
    ) -> None:
        """Count in ``client`` under ``key_prefix``; a flag at ``threshold`` attempts within
        ``window_seconds``."""
        self._prefix = key_prefix
        self._script = client.register_script(_OBSERVE)
        self._window = window_seconds
        self._threshold = threshold

    def keys(self, user_id: str) -> list[str]:
        """The counter and the evidence list of ``user_id`` (one hash slot)."""
        base = f"{self._prefix}anomaly:foreign:{{{user_id}}}"
        return [f"{base}:count", f"{base}:targets"]

    async def observe(self, user_id: str, target: dict[str, Any]) -> Probing | None:
        """Count one attempt of ``user_id`` at another user's note (``target``: note_id,
        owner_id, action); the evidence when this attempt reaches the threshold.

        Raises:
            redis.exceptions.RedisError, OSError: Redis failed.
        """
        attempts, kept = await self._script(
            keys=self.keys(user_id),
            args=[self._window, msgspec.json.encode(target), KEPT_TARGETS, self._threshold],
        )
        if not kept:
            return None
        return Probing(attempts=int(attempts), targets=[msgspec.json.decode(item) for item in kept])
