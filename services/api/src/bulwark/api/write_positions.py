"""Each user's last write position on the primary, kept in Redis for read-your-writes.

After a user's write commits, the API stores the primary's WAL insert position (a Postgres
``pg_lsn``, which asyncpg reads and writes as an integer) as ``{prefix}wal:{user_id}`` with a
short expiry; the user's next reads go to the read replica only once it has replayed that
far (``bulwark.api.replica``). The key holds the highest position written for the user: a
slower request that learned an older position cannot lower it (one Lua script, comparing
16 fixed-width hex digits, which order as the numbers do).
"""

import asyncio

import redis.asyncio
import redis.exceptions

from bulwark.common.redis_clients import bounded_redis

#: Connections kept per process; a call waits at most the timeout for a free one.
MAX_CONNECTIONS = 32
_LSN_DIGITS = 16
# Keep the higher of the stored and the new position (equal-width hex compares as text);
# renew the expiry either way.
_RAISE = """
local current = redis.call('GET', KEYS[1])
if (not current) or ARGV[1] > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"""


class WritePositionsUnavailable(Exception):  # noqa: N818  # reads as a state, like JwksUnavailable
    """Redis could not be reached or did not answer within the timeout."""


class WritePositions:
    """The ``{prefix}wal:{user_id}`` keys in Redis.

    Every call is bounded by ``timeout_seconds`` (connecting, waiting for a pooled
    connection and the round trip together) and raises `WritePositionsUnavailable` past it
    or on any Redis error.
    """

    def __init__(
        self, redis_url: str, *, key_prefix: str, timeout_seconds: float, ttl_seconds: int
    ) -> None:
        """Use Redis at ``redis_url``; keys start with ``key_prefix`` and expire after
        ``ttl_seconds``. Nothing is connected until the first call."""
        self._prefix = key_prefix
        self._timeout = timeout_seconds
        self._ttl_ms = ttl_seconds * 1000
        self._redis = bounded_redis(
            redis_url, max_connections=MAX_CONNECTIONS, timeout_seconds=timeout_seconds
        )
        self._raise = self._redis.register_script(_RAISE)

    def key(self, user_id: str) -> str:
        """``{prefix}wal:{user_id}``."""
        return f"{self._prefix}wal:{user_id}"

    async def record(self, user_id: str, position: int) -> None:
        """Remember ``position`` (an integer LSN) for ``user_id``, unless a higher one is
        already kept; the key expires ``ttl_seconds`` after this call.

        Raises:
            WritePositionsUnavailable: Redis failed or took longer than the timeout.
        """
        try:
            async with asyncio.timeout(self._timeout):
                await self._raise(
                    keys=[self.key(user_id)], args=[f"{position:0{_LSN_DIGITS}x}", self._ttl_ms]
                )
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            raise WritePositionsUnavailable(type(exc).__name__) from exc

    async def last(self, user_id: str) -> int | None:
        """The position kept for ``user_id``, or None (no write in the last ``ttl_seconds``).

        Raises:
            WritePositionsUnavailable: Redis failed or took longer than the timeout.
        """
        try:
            async with asyncio.timeout(self._timeout):
                raw = await self._redis.get(self.key(user_id))
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            raise WritePositionsUnavailable(type(exc).__name__) from exc
        return None if raw is None else int(raw, 16)

    async def aclose(self) -> None:
        """Close the connections."""
        await self._redis.aclose()
