"""Redis Cluster: opening the client, and judging requests whose buckets live in several slots.

Every bucket key carries its digest as a hash tag (``rl:domain:{<sha256>}``, see `redis_key`),
so each script call touches keys of one slot. A request with several descriptors (per IP *and*
per email) usually has buckets in several slots, and no script can span slots. The choice,
written up in ``docs/ratelimit.md``:

* Descriptors whose buckets share a slot are judged in one script call, atomically, as on a
  single Redis (a request with one limited descriptor, the common case, is one call).
* Several slots: *check, then commit*. First every slot group is checked with ``hits_addend``
  0 (counts nothing, concurrently); if any descriptor is over its limit the request is denied
  and nothing was consumed anywhere. Otherwise the groups are committed one by one, in
  order of least remaining room, stopping at the first group that is denied (another replica
  filled it between check and commit). Only in that race can a denied request have consumed
  hits in the groups committed before it: the limiter errs towards denying (it may admit
  fewer than L in a window under contention) and a limit of L never admits L + 1.
"""

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio
import redis.asyncio.cluster
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

from bulwark.common.logging import get_logger
from bulwark.common.redis_clients import bounded_redis
from bulwark.ratelimit.limiter import Hit, LimiterUnavailableError, WindowState

log = get_logger(__name__)

CLUSTER_SCHEME = "redis+cluster"
REDIS_MAX_CONNECTIONS = 64
# redis-py's async RedisCluster does not wait for a free connection: past max_connections a
# node raises MaxConnectionsError, a ConnectionError, on which the client drops every
# connection of that node (failing the calls in flight on them). So the limiter's calls wait
# on a semaphore of REDIS_MAX_CONNECTIONS (`SlotGroupedLimiter`), and each node may open
# more than that for the few other calls (block index, operator API).
CLUSTER_NODE_MAX_CONNECTIONS = 4 * REDIS_MAX_CONNECTIONS

RedisClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster


# Cluster schemes and the plain scheme redis-py is given for them (``rediss``: TLS).
_PLAIN_SCHEMES = {CLUSTER_SCHEME: "redis", "rediss+cluster": "rediss"}


def is_cluster_url(url: str) -> bool:
    """True for a ``redis+cluster://host:port`` (or, with TLS, ``rediss+cluster://``) URL."""
    return urlsplit(url).scheme in _PLAIN_SCHEMES


def open_redis(url: str, cluster: bool, timeout_seconds: float) -> RedisClient:
    """Return a client for ``url``: `RedisCluster` when ``cluster`` or the URL's scheme is
    ``redis+cluster://`` or ``rediss+cluster://`` (any one node is enough to discover the
    others; ``rediss`` keeps TLS), else a `Redis` over
    a blocking pool of `REDIS_MAX_CONNECTIONS`. ``timeout_seconds`` bounds connects and reads;
    one immediate retry lets the first call after a Redis restart reconnect.
    """
    if cluster or is_cluster_url(url):
        parts = urlsplit(url)
        scheme = _PLAIN_SCHEMES.get(parts.scheme, parts.scheme)
        plain = urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))
        return redis.asyncio.cluster.RedisCluster.from_url(
            plain,
            max_connections=CLUSTER_NODE_MAX_CONNECTIONS,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 1),
        )
    return bounded_redis(
        url, max_connections=REDIS_MAX_CONNECTIONS, timeout_seconds=timeout_seconds
    )


async def discover(client: RedisClient, timeout_seconds: float) -> None:
    """Learn a cluster's slot map before serving (a no-op for a single Redis).

    Without it the first concurrent calls all go to one node, meet MOVED, and each triggers
    a re-discovery that closes the connections other calls are using. A cluster that does not
    answer is logged and left to discover itself on first use (the failure modes apply).
    """
    if not isinstance(client, redis.asyncio.cluster.RedisCluster):
        return
    try:
        async with asyncio.timeout(max(timeout_seconds, 1.0)):
            await client.initialize()
    except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
        log.warning("redis_cluster_discovery_failed", error=type(exc).__name__)


class SlotGroupedLimiter:
    """A limiter for Redis Cluster over one that judges keys of a single slot atomically."""

    def __init__(self, inner: Any, timeout_seconds: float) -> None:
        """Wrap ``inner``, whose `Limiter.hit` must only ever see keys of one slot.

        At most `REDIS_MAX_CONNECTIONS` calls of ``inner`` run at once; a call that waits
        longer than ``timeout_seconds`` for its turn fails with `LimiterUnavailableError`.
        """
        self._inner = inner
        self._turns = asyncio.Semaphore(REDIS_MAX_CONNECTIONS)
        self._timeout = timeout_seconds

    async def _inner_hit(self, hits: Sequence[Hit]) -> list[WindowState]:
        try:
            async with asyncio.timeout(self._timeout):
                await self._turns.acquire()
        except TimeoutError as exc:
            log.warning("redis_unavailable", error="ConnectionsBusy")
            raise LimiterUnavailableError("ConnectionsBusy") from exc
        try:
            return list(await self._inner.hit(hits))
        finally:
            self._turns.release()

    async def hit(self, checks: Sequence[Hit]) -> list[WindowState]:
        """Judge ``checks`` as `Limiter.hit` does, one script call per slot.

        Raises:
            LimiterUnavailableError: as the inner limiter.
        """
        groups: dict[int, list[int]] = {}
        for index, check in enumerate(checks):
            groups.setdefault(key_slot(check.key.encode()), []).append(index)
        if len(groups) <= 1:
            return await self._inner_hit(checks)
        order = [groups[slot] for slot in sorted(groups)]
        states = [WindowState(False, 0, 0)] * len(checks)

        # Phase 1: check (hits_addend 0; reset and refund actions are left for the commit).
        probes = [[i for i in group if not checks[i].action] for group in order]
        answers = await asyncio.gather(
            *(
                self._inner_hit([checks[i]._replace(hits_addend=0) for i in probe])
                for probe in probes
                if probe
            )
        )
        for probe, answer in zip([p for p in probes if p], answers, strict=True):
            for index, state in zip(probe, answer, strict=True):
                states[index] = state
        if _denies(checks, states, range(len(checks))):
            return states
        starting = {i for i, check in enumerate(checks) if _starts(check, states[i])}
        if starting:
            # As one script would: the failures that start blocks are written (the blocks
            # start), the rest of the call is not counted.
            blocks = [[i for i in group if i in starting] for group in order]
            blocks = [group for group in blocks if group]
            started = await asyncio.gather(
                *(self._inner_hit([checks[i] for i in group]) for group in blocks)
            )
            for group, answer in zip(blocks, started, strict=True):
                for index, state in zip(group, answer, strict=True):
                    states[index] = state
            return states
        # Phase 2: commit, tightest group first (the likeliest to be denied by a race, so that
        # the least is consumed in vain), stopping at a group denied by a race.
        order.sort(key=lambda group: min(states[i].remaining for i in group))
        for group in order:
            if all(checks[i].hits_addend == 0 and not checks[i].action for i in group):
                continue  # checks only: the answer is phase 1's
            committed = await self._inner_hit([checks[i] for i in group])
            for index, state in zip(group, committed, strict=True):
                states[index] = state
            if _denies(checks, states, group):
                break
        return states


def _denies(checks: Sequence[Hit], states: Sequence[WindowState], indexes: Any) -> bool:
    return any(states[i].over_limit and not _shadow(checks[i]) for i in indexes)


def _starts(hit: Hit, probed: WindowState) -> bool:
    """Whether committing ``hit`` would start a backoff block: its failures go past what the
    probe (``hits_addend`` 0) left (a check counts no failure, so the probe cannot tell)."""
    policy = hit.policy
    return (
        policy is not None
        and policy.kind == "backoff"
        and not policy.shadow_mode
        and not hit.action
        and hit.hits_addend > probed.remaining
    )


def _shadow(hit: Hit) -> bool:
    return hit.policy is not None and hit.policy.shadow_mode
