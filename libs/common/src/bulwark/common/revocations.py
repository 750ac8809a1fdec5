"""Revoked device sessions (``sid``) and signing keys (``kid``), shared through Redis by the
auth service and the API.

An access token is a JWT the API verifies on its own, so ending a session in the auth
service's database does not stop the session's access tokens. The auth service therefore also
writes ``{prefix}revoked:sid:<sid>`` (value ``1``) to Redis when a session ends (logout,
logout-all, deletion, refresh reuse, device mismatch, RFC 7009 revocation), with an expiry of
`entry_lifetime` seconds: after that, every access token of the session has expired anyway.
A signing key removed from the auth service's key folder (an emergency ``keys revoke``) is
listed the same way as ``{prefix}revoked:kid:<kid>``, for `revoked_key_lifetime` seconds, so
tokens it signed fail at once and for as long as the API's JWKS cache may still hold the key
(including the stale key set it keeps serving while the auth service is unreachable). The
API asks Redis one ``MGET`` over both keys per request, bounded by a short timeout.

Postgres stays the record of which sessions ended; Redis holds only the recent ones, and the
auth service re-publishes them periodically, so a lost write heals.

A Redis that restarts empty (or is flushed) would forget every revocation at once, and one
that comes back from a snapshot, or fails over to a replica that lags, would forget the
latest ones; the tokens of those ended sessions would work again. So the set carries a
marker, ``{prefix}revoked:complete``, holding an *epoch*: written by the auth service only
after listing every recent revocation from Postgres (`SessionRevocations.mark_complete`),
and raised by every revocation written after that, in the same transaction (never below
Redis's clock in milliseconds, so a rebuild always lands past every epoch written before).
The API reads it in the same round trip as the entries (one ``MGET``) and remembers the
highest epoch it has seen: no marker, or an epoch lower than one seen before the read was
sent (Redis went back in time), means the set cannot be trusted, and the check answers as
if Redis were down (``REVOCATION_FAILURE_MODE``) until the set is rebuilt. The auth service
checks the marker twice a second and rebuilds the set when it is gone or has gone back.
Redis must not evict these keys (``maxmemory-policy noeviction``).
"""

import asyncio
import uuid
from collections.abc import Sequence
from typing import Protocol

import redis.asyncio
import redis.exceptions

from bulwark.common.access_tokens import JWKS_HOLD_SECONDS, LEEWAY_SECONDS
from bulwark.common.logging import get_logger
from bulwark.common.problems import ServiceUnavailable, Unauthorized
from bulwark.common.redis_clients import bounded_redis

_log = get_logger(__name__)
#: Connections kept per process; a request waits at most the timeout for a free one.
MAX_CONNECTIONS = 64
#: Entries written per round trip when many sessions end at once.
_BATCH = 500
# Raises the marker's epoch to max(epoch + 1, Redis time in ms, ARGV[1]); creates it only
# when ARGV[2] is "1" (a rebuild), so revocations written into a set that lost its marker
# leave it incomplete. Returns the new epoch, or 0 when there is no marker.
_RAISE_EPOCH = """
local current = tonumber(redis.call('GET', KEYS[1]) or '')
if current == nil and ARGV[2] ~= '1' then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = math.max((current or 0) + 1, now, tonumber(ARGV[1]))
redis.call('SET', KEYS[1], string.format('%d', epoch))
return epoch
"""


#: What a waiting check is told: whether the set is current, and its keys' values.
_Answer = asyncio.Future[tuple[bool, list[bytes | str | None]]]


class RevocationsUnavailable(Exception):  # noqa: N818  # reads as a state, like JwksUnavailable
    """Redis could not be reached or did not answer within the timeout."""


def entry_lifetime(access_token_ttl: int) -> int:
    """Seconds a revoked ``sid`` must stay listed: the longest an access token issued to the
    session before it ended can still verify (its lifetime plus the verifier's ``exp``
    leeway), plus one more leeway for tokens minted while the revocation was committing."""
    return access_token_ttl + 2 * LEEWAY_SECONDS


def revoked_key_lifetime(access_token_ttl: int) -> int:
    """Seconds a removed signing key (``kid``) must stay listed: as long as a verifier's JWKS
    cache can still hold the key (`JWKS_HOLD_SECONDS` after its last fetch, which came before
    the removal was published, plus a leeway), and never less than `entry_lifetime`. Once no
    cache holds the key, a token it signed names an unknown ``kid`` and fails anyway; before
    that, the listing is all that refuses it (a compromised key's forged tokens)."""
    return max(entry_lifetime(access_token_ttl), JWKS_HOLD_SECONDS + LEEWAY_SECONDS)


class SessionRevocations:
    """The revoked-session set in Redis.

    Every call is bounded by ``timeout_seconds`` (connecting, waiting for a pooled
    connection and the round trip together) and raises `RevocationsUnavailable` past it or
    on any Redis error; what to do then is the caller's decision.
    """

    def __init__(self, redis_url: str, *, key_prefix: str, timeout_seconds: float) -> None:
        """Use Redis at ``redis_url`` (``redis://``, ``rediss://`` or ``unix://``); keys start
        with ``key_prefix``. Nothing is connected until the first call."""
        self._prefix = key_prefix
        self._timeout = timeout_seconds
        self._redis = bounded_redis(
            redis_url, max_connections=MAX_CONNECTIONS, timeout_seconds=timeout_seconds
        )
        self._raise_epoch = self._redis.register_script(_RAISE_EPOCH)
        #: The highest epoch this process has seen; a lower one, read after, means Redis went back.
        self.epoch_seen = 0
        #: Checks waiting for the next ``MGET`` (`is_revoked`), and the ``MGET``s running.
        self._batch: list[tuple[list[str], _Answer]] = []
        self._batch_tasks: set[asyncio.Task[None]] = set()

    def key(self, sid: str | uuid.UUID) -> str:
        """The Redis key of session ``sid``: ``{prefix}revoked:sid:{sid}``."""
        return f"{self._prefix}revoked:sid:{sid}"

    def kid_key(self, kid: str) -> str:
        """The Redis key of signing key ``kid``: ``{prefix}revoked:kid:{kid}``."""
        return f"{self._prefix}revoked:kid:{kid}"

    @property
    def marker_key(self) -> str:
        """The key holding the set's epoch: ``{prefix}revoked:complete``."""
        return f"{self._prefix}revoked:complete"

    def _current(self, marker: bytes | str | None, seen_before: int) -> bool:
        """True when ``marker`` (the marker's value, as read) is present and not behind
        ``seen_before``, the highest epoch this process had seen when the read was sent;
        remembers the highest epoch.

        Only a read sent after an epoch was seen proves that Redis went back: reads run
        concurrently on separate connections, so the answer to an earlier read (holding the
        epoch of then) can arrive after a later read's (holding a raised one).
        """
        epoch = int(marker) if marker is not None and marker.isdigit() else 0
        if epoch == 0 or epoch < seen_before:
            return False
        self.epoch_seen = max(self.epoch_seen, epoch)
        return True

    async def is_revoked(self, sid: str, kid: str = "") -> bool:
        """True when session ``sid`` or signing key ``kid`` is listed as revoked.

        The checks that start in the same turn of the event loop share one ``MGET`` of the
        marker and all their keys (under load, many requests reach this check together; one
        round trip for all of them costs a fraction of one each). Each check still waits at
        most the timeout, and is judged on its own keys and the batch's marker.

        Raises:
            RevocationsUnavailable: Redis failed or took longer than the timeout, or the
                set is incomplete (no marker, or an epoch lower than one seen before: Redis
                lost revocations, and the auth service has not rebuilt the set from Postgres
                yet).
        """
        keys = [self.key(sid), *([self.kid_key(kid)] if kid else [])]
        answer: _Answer = asyncio.get_running_loop().create_future()
        if not self._batch:
            asyncio.get_running_loop().call_soon(self._send_batch)
        self._batch.append((keys, answer))
        try:
            async with asyncio.timeout(self._timeout):
                current, entries = await answer
        except TimeoutError as exc:
            raise RevocationsUnavailable(type(exc).__name__) from exc
        if any(entry is not None for entry in entries):
            return True  # listed: revoked, complete set or not
        if not current:
            raise RevocationsUnavailable("revocation set incomplete")
        return False

    def _send_batch(self) -> None:
        """Start the ``MGET`` of the checks waiting now (see `is_revoked`)."""
        batch, self._batch = self._batch, []
        task = asyncio.create_task(self._answer_batch(batch))
        self._batch_tasks.add(task)  # a reference until done, as asyncio asks
        task.add_done_callback(self._batch_tasks.discard)

    async def _answer_batch(self, batch: list[tuple[list[str], _Answer]]) -> None:
        keys = [self.marker_key, *(key for entry_keys, _ in batch for key in entry_keys)]
        seen_before = self.epoch_seen
        try:
            async with asyncio.timeout(self._timeout):
                marker, *entries = await self._redis.mget(keys)
        except Exception as exc:  # noqa: BLE001  # every waiting check is told, whatever it is
            # Besides RedisError, OSError and TimeoutError, redis-py can raise AttributeError
            # or IndexError from a connection torn down under a running call.
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(RevocationsUnavailable(type(exc).__name__))
            return
        current = self._current(marker, seen_before)  # every answer teaches the epoch
        position = 0
        for entry_keys, answer in batch:
            if not answer.done():  # its caller may have timed out and gone
                answer.set_result((current, entries[position : position + len(entry_keys)]))
            position += len(entry_keys)

    async def is_current(self) -> bool:
        """True when the marker is present and not behind an epoch this process has seen
        (the set holds every recent revocation).

        Raises:
            RevocationsUnavailable: Redis failed or took longer than the timeout.
        """
        seen_before = self.epoch_seen
        try:
            async with asyncio.timeout(self._timeout):
                marker = await self._redis.get(self.marker_key)
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            raise RevocationsUnavailable(type(exc).__name__) from exc
        return self._current(marker, seen_before)

    async def mark_complete(self) -> None:
        """Write the marker with an epoch past every one seen; call only right after every
        recent revocation was listed.

        Raises:
            RevocationsUnavailable: Redis failed or took longer than the timeout.
        """
        try:
            async with asyncio.timeout(self._timeout):
                epoch = await self._raise_epoch(
                    keys=[self.marker_key], args=[self.epoch_seen + 1, "1"]
                )
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            raise RevocationsUnavailable(type(exc).__name__) from exc
        self.epoch_seen = max(self.epoch_seen, int(epoch))

    async def mark_incomplete(self) -> None:
        """Delete the marker (a revocation could not be listed): the API applies
        ``REVOCATION_FAILURE_MODE`` until the set is rebuilt.

        Raises:
            RevocationsUnavailable: Redis failed or took longer than the timeout.
        """
        try:
            async with asyncio.timeout(self._timeout):
                await self._redis.delete(self.marker_key)
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            raise RevocationsUnavailable(type(exc).__name__) from exc

    async def revoke(self, entries: Sequence[tuple[str | uuid.UUID, int]]) -> None:
        """List each ``(sid, seconds)`` as revoked for ``seconds`` (``SET key 1 EX seconds``),
        pipelined, in batches. Idempotent: listing a session again renews its expiry.

        Raises:
            RevocationsUnavailable: Redis failed or a batch took longer than the timeout.
        """
        await self._set([(self.key(sid), seconds) for sid, seconds in entries])

    async def revoke_signing_keys(self, kids: Sequence[str], seconds: int) -> None:
        """List the signing keys ``kids`` as revoked for ``seconds``.

        Raises:
            RevocationsUnavailable: Redis failed or took longer than the timeout.
        """
        await self._set([(self.kid_key(kid), seconds) for kid in kids])

    async def _set(self, entries: Sequence[tuple[str, int]]) -> None:
        """Write ``(key, seconds)`` entries, each batch in one transaction that also raises
        the epoch (when the set has its marker)."""
        for start in range(0, len(entries), _BATCH):
            try:
                async with asyncio.timeout(self._timeout):
                    async with self._redis.pipeline(transaction=True) as pipe:
                        for key, seconds in entries[start : start + _BATCH]:
                            pipe.set(key, b"1", ex=max(1, seconds))
                        await self._raise_epoch(
                            keys=[self.marker_key], args=[self.epoch_seen + 1, "0"], client=pipe
                        )
                        *_, epoch = await pipe.execute()
            except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
                raise RevocationsUnavailable(type(exc).__name__) from exc
            self.epoch_seen = max(self.epoch_seen, int(epoch))

    async def aclose(self) -> None:
        """Close the connections."""
        await self._redis.aclose(close_connection_pool=True)


class RevocationSource(Protocol):
    """What `ensure_session_live` needs: a `SessionRevocations`, or a stand-in in tests."""

    async def is_revoked(self, sid: str, kid: str = "") -> bool:
        """True when ``sid`` or ``kid`` is revoked; raises `RevocationsUnavailable` when
        unknowable."""
        ...


async def ensure_session_live(
    revocations: RevocationSource, sid: str, *, kid: str = "", fail_open: bool
) -> None:
    """Refuse an access token whose session (``sid``) has ended or whose signing key
    (``kid``) was revoked.

    When Redis cannot answer, ``fail_open`` decides: true lets the request through (the
    token's signature and ``exp`` were checked; a revoked session may then work until its
    token expires) and logs ``revocation_check_unavailable``; false answers 503.

    Raises:
        Unauthorized: the session was revoked (401, ``invalid_token``, RFC 6750 §3.1).
        ServiceUnavailable: Redis is unreachable and ``fail_open`` is false (503 with
            ``Retry-After``).
    """
    try:
        revoked = await revocations.is_revoked(sid, kid)
    except RevocationsUnavailable as exc:
        _log.warning("revocation_check_unavailable", fail_open=fail_open, error=str(exc))
        if fail_open:
            return
        raise ServiceUnavailable(
            "The service is temporarily unavailable; retry shortly.", {"Retry-After": "5"}
        ) from None
    if revoked:
        _log.info("access_token_rejected", reason="session or signing key revoked")
        raise Unauthorized("The session has ended.")
