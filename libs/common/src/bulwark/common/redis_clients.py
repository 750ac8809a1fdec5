"""The bounded asyncio Redis client our services use for their own calls."""

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def bounded_redis(url: str, *, max_connections: int, timeout_seconds: float) -> redis.asyncio.Redis:
    """A client for ``url`` (``redis://``, ``rediss://`` or ``unix://``) over a blocking pool
    of at most ``max_connections``: waiting for a pooled connection, connecting and each
    read are bounded by ``timeout_seconds``. Nothing is connected until the first call.

    One immediate retry on a fresh connection, so a connection that went stale in a Redis
    restart costs no request; the caller's own timeout still bounds the call. (The asyncio
    client needs ``redis.asyncio.retry.Retry``: the synchronous class never awaits the call
    it retries, so it retried nothing.)
    """
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_seconds,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 1),
    )
    return redis.asyncio.Redis.from_pool(pool)
