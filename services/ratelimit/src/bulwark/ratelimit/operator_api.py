"""``bulwark.ratelimit.v1.RateLimitOperator``: read usage, list blocks, clear a block or a key.

Bucket keys are opaque digests (see `redis_key`), so the service keeps a small index of the
buckets that denied a request: `BlockRecorder` wraps the limiter and, whenever a descriptor is
over its limit, records ``key -> (limit, reset time)`` in two Redis keys that share one hash
slot (``{prefix}{blocks}:index``, a sorted set scored by reset time in ms of Redis ``TIME``, and
``{prefix}{blocks}:limits``, a hash). Recording is best effort and off the request path: it
runs in a background task, at most once per key until that key's reset time, and a Redis error
there is logged, never raised. `RateLimitOperator.ListBlocks` re-checks every indexed bucket
against the limiter (counting nothing) and answers only those still full.
"""

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import redis.asyncio
import redis.exceptions

from bulwark.common.logging import get_logger
from bulwark.ratelimit._generated.v1 import operator_pb2
from bulwark.ratelimit.cache import OverLimitCache
from bulwark.ratelimit.limiter import Hit, LimiterUnavailableError, WindowState
from bulwark.ratelimit.rules import Backoff, Entries, Policy, RateLimit, Rules, redis_key
from bulwark.ratelimit.service import (
    _KEY_SUFFIX,
    MAX_DOMAIN_LENGTH,
    MAX_ENTRIES,
    MAX_KEY_LENGTH,
    MAX_VALUE_LENGTH,
    InvalidRequestError,
    key_for,
)

log = get_logger(__name__)

MAX_BLOCKS = 1000
_MAX_REMEMBERED = 10_000  # keys recorded recently, so a flood on one key records it once
_REDIS_KEY_MAX = 512

# KEYS: index, policies. ARGV: triples (bucket key, reset ms, policy JSON).
_RECORD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #ARGV, 3 do
  redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[i + 1])), ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
end
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now),
  'LIMIT', 0, 1000)
for _, key in ipairs(gone) do
  redis.call('ZREM', KEYS[1], key)
  redis.call('HDEL', KEYS[2], key)
end
return #gone
"""

# KEYS: index, policies. ARGV: count. Returns pairs (bucket key, policy JSON).
_LIST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now),
  'LIMIT', 0, 1000)
for _, key in ipairs(gone) do
  redis.call('ZREM', KEYS[1], key)
  redis.call('HDEL', KEYS[2], key)
end
local keys = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local out = {}
for _, key in ipairs(keys) do
  out[#out + 1] = key
  out[#out + 1] = redis.call('HGET', KEYS[2], key) or ''
end
return out
"""

_REDIS_ERRORS = (redis.exceptions.RedisError, OSError, TimeoutError)


def index_keys(prefix: str) -> tuple[str, str]:
    """The two Redis keys of the block index under ``prefix`` (one hash slot: ``{blocks}``)."""
    return f"{prefix}{{blocks}}:index", f"{prefix}{{blocks}}:policies"


class _StoredPolicy(msgspec.Struct, array_like=True):
    kind: str
    requests: int
    window_seconds: int
    block_seconds: int = 0
    max_block_seconds: int = 0


def _policy_of(hit: Hit) -> Policy:
    if hit.policy is not None:
        return hit.policy
    return Policy("sliding_log", hit.limit, None, "allow", False)


def _encode_policy(policy: Policy) -> str:
    backoff = policy.backoff
    stored = _StoredPolicy(
        policy.kind,
        policy.limit.requests,
        policy.limit.window_seconds,
        backoff.block_seconds if backoff else 0,
        backoff.max_block_seconds if backoff else 0,
    )
    return msgspec.json.encode(stored).decode()


def _decode_policy(text: str) -> Policy | None:
    try:
        s = msgspec.json.decode(text, type=_StoredPolicy)
        backoff = None
        if s.kind == "backoff":
            backoff = Backoff(s.requests, s.window_seconds, s.block_seconds, s.max_block_seconds)
        return Policy(s.kind, RateLimit(s.requests, s.window_seconds), backoff, "allow", False)
    except (msgspec.DecodeError, ValueError, TypeError):
        return None


class BlockRecorder:
    """A limiter that answers as ``inner`` and records over-limit buckets in the block index.

    Shadow rules and reset actions are never recorded.
    """

    def __init__(self, inner: Any, client: Any, prefix: str) -> None:
        """Wrap ``inner`` (has `Limiter.hit`); record in ``client`` (Redis or cluster)."""
        self._inner = inner
        self._keys = index_keys(prefix)
        self._record = client.register_script(_RECORD)
        self._recent: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def hit(self, hits: Sequence[Hit]) -> list[WindowState]:
        """Answer as the inner limiter; schedule recording of the buckets over their limit."""
        states: list[WindowState] = await self._inner.hit(hits)
        now = time.monotonic()
        args: list[str | int] = []
        for hit, state in zip(hits, states, strict=True):
            if (
                state.over_limit
                and not hit.action
                and not (hit.policy is not None and hit.policy.shadow_mode)
                and self._recent.get(hit.key, 0.0) <= now
            ):
                if len(self._recent) >= _MAX_REMEMBERED:
                    self._recent.clear()
                self._recent[hit.key] = now + state.reset_ms / 1000
                args += [hit.key, state.reset_ms, _encode_policy(_policy_of(hit))]
        if args:
            task = asyncio.create_task(self._write(args))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return states

    async def drain(self) -> None:
        """Wait for recordings in flight (before the Redis client is closed)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def forget(self, key: str) -> None:
        """Record ``key`` again at its next denial (after an operator cleared it)."""
        self._recent.pop(key, None)

    async def _write(self, args: list[str | int]) -> None:
        try:
            await self._record(keys=list(self._keys), args=args)
        except _REDIS_ERRORS as exc:
            log.warning("block_index_unavailable", error=type(exc).__name__)


def _entries(descriptor: Any) -> Entries:
    entries = [(entry.key, entry.value) for entry in descriptor.entries]
    if not 1 <= len(entries) <= MAX_ENTRIES:
        raise InvalidRequestError(f"descriptor must hold 1 to {MAX_ENTRIES} entries")
    for key, value in entries:
        if not 1 <= len(key) <= MAX_KEY_LENGTH or not 1 <= len(value) <= MAX_VALUE_LENGTH:
            raise InvalidRequestError(
                f"entry keys are 1 to {MAX_KEY_LENGTH} characters, values 1 to {MAX_VALUE_LENGTH}"
            )
    return entries


def _domain(domain: str) -> str:
    if not 1 <= len(domain) <= MAX_DOMAIN_LENGTH:
        raise InvalidRequestError(f"domain must be 1 to {MAX_DOMAIN_LENGTH} characters")
    return domain


class RateLimitOperator:
    """Implementation of ``bulwark.ratelimit.v1.RateLimitOperator`` for ``grpc.aio``.

    Errors are raised, as in `RateLimitService`: `InvalidRequestError` becomes
    INVALID_ARGUMENT and `LimiterUnavailableError` UNAVAILABLE.
    """

    def __init__(
        self,
        rules: Callable[[], Rules],
        limiter: Any,
        client: Any,
        prefix: str,
        *,
        recorder: BlockRecorder | None = None,
        cache: OverLimitCache | None = None,
    ) -> None:
        """Read rules from ``rules()`` (current rules, reloads included) and buckets through
        ``limiter`` (`Limiter.hit` with ``hits_addend`` 0) and ``client`` (index, deletes).
        A clear also evicts the key from this replica's ``cache`` of over-limit keys (other
        replicas forget it at the latest at its reset time, see docs/ratelimit.md).
        """
        self._rules = rules
        self._limiter = limiter
        self._client = client
        self._prefix = prefix
        self._index = index_keys(prefix)
        self._list = client.register_script(_LIST)
        self._recorder = recorder
        self._cache = cache

    async def _check(self, hits: Sequence[Hit]) -> list[WindowState]:
        if not hits:
            return []
        states: list[WindowState] = await self._limiter.hit(hits)
        return states

    async def GetUsage(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC name
        """Usage of one (domain, descriptor) bucket; counts nothing.

        Identity values are normalised as in ``ShouldRateLimit``. For a ``distinct`` rule the
        descriptor's last entry is the member: ``blocked`` says whether one more *new* value
        would be denied. For a ``backoff`` rule, ``used`` counts failures (or ``requests``
        while blocked).

        Raises:
            InvalidRequestError: domain or entries out of bounds.
            LimiterUnavailableError: Redis failed or timed out.
        """
        domain = _domain(request.domain)
        entries = _entries(request.descriptor)
        match = self._rules().resolve(domain, entries)
        if match is None or match.action:
            key = redis_key(self._prefix, domain, entries)
            return operator_pb2.GetUsageResponse(key=key, limited=False)
        key, _member = key_for(self._prefix, domain, match)
        limit = match.policy.limit
        (state,) = await self._check([Hit(key, limit, 0, match.policy)])
        return operator_pb2.GetUsageResponse(
            key=key,
            limited=True,
            limit=operator_pb2.Limit(requests=limit.requests, window_seconds=limit.window_seconds),
            used=max(limit.requests - state.remaining, 0),
            remaining=state.remaining,
            blocked=state.over_limit,
            reset_ms=state.reset_ms,
        )

    async def ListBlocks(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC name
        """Buckets that denied a request and are still full, soonest reset first.

        Raises:
            LimiterUnavailableError: Redis failed or timed out.
        """
        count = min(request.limit or MAX_BLOCKS, MAX_BLOCKS)
        try:
            raw = await self._list(keys=list(self._index), args=[count])
        except _REDIS_ERRORS as exc:
            raise LimiterUnavailableError(type(exc).__name__) from exc
        pairs = [
            (_decode(raw[i]), _decode_policy(_decode(raw[i + 1]))) for i in range(0, len(raw), 2)
        ]
        hits = [Hit(key, p.limit, 0, p) for key, p in pairs if p is not None]
        response = operator_pb2.ListBlocksResponse()
        for hit, state in zip(hits, await self._check(hits), strict=True):
            limit = hit.limit
            if state.over_limit:
                response.blocks.add(
                    key=hit.key,
                    limit=operator_pb2.Limit(
                        requests=limit.requests, window_seconds=limit.window_seconds
                    ),
                    used=max(limit.requests - state.remaining, 0),
                    reset_ms=state.reset_ms,
                )
        return response

    async def ClearBlock(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC name
        """Empty the bucket with Redis key ``request.key`` (must be under the key prefix).

        Raises:
            InvalidRequestError: the key is not a bucket key of this service.
            LimiterUnavailableError: Redis failed or timed out.
        """
        key: str = request.key
        if not key.startswith(self._prefix) or len(key) > _REDIS_KEY_MAX or key in self._index:
            raise InvalidRequestError("key must be a bucket key of this service")
        return await self._clear(key)

    async def ClearKey(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC name
        """Empty the buckets of a (domain, descriptor), whatever the rule's algorithm.

        Clears every algorithm's key of the descriptor (one hash slot, so one ``DEL``); for a
        ``distinct`` rule, name the descriptor without its last entry (e.g. only the IP).
        ``cleared`` is true when any of them held something.

        Raises:
            InvalidRequestError: domain or entries out of bounds.
            LimiterUnavailableError: Redis failed or timed out.
        """
        domain = _domain(request.domain)
        entries = list(_entries(request.descriptor))
        match = self._rules().resolve(domain, entries)
        if match is not None:
            entries = match.entries  # identity values normalised
        base = redis_key(self._prefix, domain, entries)
        return await self._clear(base, [base + suffix for suffix in _KEY_SUFFIX.values()])

    async def _clear(self, key: str, keys: Sequence[str] = ()) -> Any:
        keys = list(keys) or [key]
        index, policies = self._index
        try:
            deleted = await self._client.delete(*keys)
            await self._client.zrem(index, *keys)
            await self._client.hdel(policies, *keys)
        except _REDIS_ERRORS as exc:
            raise LimiterUnavailableError(type(exc).__name__) from exc
        for each in keys:
            if self._recorder is not None:
                self._recorder.forget(each)
            if self._cache is not None:
                self._cache.discard(each)
        log.info("ratelimit_cleared", key=key, cleared=bool(deleted))
        return operator_pb2.ClearResponse(key=key, cleared=bool(deleted))


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
