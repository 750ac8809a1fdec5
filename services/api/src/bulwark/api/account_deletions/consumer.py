"""The consumer of the account-deletion stream (`bulwark.common.account_deletions`): one per
API process, in the consumer group ``bulwark-api``, named ``<hostname>-<pid>``.

Each round takes, in this order, the first of these that is not empty (at most `BATCH`
entries):

1. this consumer's own pending entries (one that failed before, retried after the backoff;
   or a restarted process's, when it has the same name, as PID 1 in a container does);
2. entries another consumer has held unacknowledged for ``claim_idle_seconds`` (``XAUTOCLAIM``):
   a replica that died, or this process's earlier incarnation, mid-deletion;
3. new entries (``XREADGROUP ... >``), waiting at most ``block_seconds``.

Each entry is erased (`service.erase_user`), then acknowledged (``XACK``), never before. A
failure (Redis, Postgres, storage down, or a bug) is logged as ``account_deletion_failed``
(the exception's class and the entry's id) and retried after a backoff that doubles from
0.5 s to `MAX_BACKOFF_SECONDS`; the entry stays pending. An entry that is not a deletion
(a malformed user id) is logged as ``account_deletion_malformed`` and acknowledged:
retrying cannot mend it. Every Redis call has a deadline. At most once an hour the
consumer trims the stream (`trim`).

An erasure that lasts longer than ``claim_idle_seconds`` may be claimed by another replica
and run twice at once; that costs work, not correctness (`service.erase_user` is
idempotent).
"""

import asyncio
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import redis.asyncio
import redis.exceptions

from bulwark.api.account_deletions.service import Erased
from bulwark.common.account_deletions import (
    CONSUMER_GROUP,
    MalformedDeletionError,
    parse,
    stream_key,
)
from bulwark.common.logging import get_logger

_log = get_logger(__name__)

#: Entries taken per round.
BATCH = 10
#: Longest wait between two attempts after a failure, in seconds.
MAX_BACKOFF_SECONDS = 30.0
FIRST_BACKOFF_SECONDS = 0.5
#: How long acknowledged entries stay in the stream, in seconds (for an operator to see
#: what was handled), and how often the consumer trims.
RETENTION_SECONDS = 7 * 24 * 3600
TRIM_EVERY_SECONDS = 3600.0

Fields = Mapping[bytes, bytes] | None
Entry = tuple[str, Fields]


def consumer_name() -> str:
    """This process's name in the group: ``<hostname>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def backoff_seconds(failures: int) -> float:
    """The wait after ``failures`` failures in a row (1, 2, ...): 0.5 s doubled each time,
    at most `MAX_BACKOFF_SECONDS`, with up to 20 % taken off at random (so that replicas
    that failed together do not retry together)."""
    ceiling = min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2.0 ** min(failures - 1, 16))
    return ceiling * (1 - 0.2 * random.random())  # noqa: S311  # jitter, not a secret


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _id(entry_id: str) -> tuple[int, int]:
    milliseconds, sequence = entry_id.split("-")
    return int(milliseconds), int(sequence)


class DeletionConsumer:
    """Reads the deletions of ``prefix``'s stream with ``redis`` and runs ``erase`` on each.

    Args:
        redis: a client whose socket timeout outlasts ``block_seconds`` (each call is also
            bounded here: ``timeout_seconds``, plus ``block_seconds`` for the blocking read).
        erase: erases one user (`service.erase_user` bound to the database and storage).
        claim_idle_seconds: how long an entry stays unacknowledged in another consumer's
            hands before this one takes it over (``ACCOUNT_DELETION_CLAIM_SECONDS``).
    """

    def __init__(
        self,
        redis: redis.asyncio.Redis,
        erase: Callable[[uuid.UUID], Awaitable[Erased]],
        *,
        prefix: str,
        claim_idle_seconds: float = 30.0,
        block_seconds: float = 5.0,
        timeout_seconds: float = 1.0,
        name: str | None = None,
    ) -> None:
        self._redis = redis
        self._erase = erase
        self._key = stream_key(prefix)
        self._claim_idle_ms = int(claim_idle_seconds * 1000)
        self._block_ms = int(block_seconds * 1000)
        self._timeout = timeout_seconds
        self.name = name or consumer_name()
        self._claim_cursor = "0-0"
        self._group_ready = False
        #: The entry being handled (for the failure's log line), or None.
        self.current: str | None = None

    async def _call(self, call: Awaitable[Any], extra_seconds: float = 0.0) -> Any:
        async with asyncio.timeout(self._timeout + extra_seconds):
            return await call

    async def ensure_group(self) -> None:
        """Create the group (and the stream) unless it exists: ``XGROUP CREATE key bulwark-api
        0 MKSTREAM``, from the stream's start, so deletions published before the API first
        ran are handled too."""
        try:
            await self._call(
                self._redis.xgroup_create(self._key, CONSUMER_GROUP, id="0", mkstream=True)
            )
        except redis.exceptions.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._group_ready = True

    async def next_entries(self) -> list[Entry]:
        """The entries of this round (see the module's docstring); [] when none came within
        ``block_seconds``. A pending entry whose fields are gone (trimmed) has ``None``."""
        if not self._group_ready:
            await self.ensure_group()
        own = await self._read("0", block=False)
        if own:
            return own
        answer = await self._call(
            self._redis.xautoclaim(
                self._key,
                CONSUMER_GROUP,
                self.name,
                min_idle_time=self._claim_idle_ms,
                start_id=self._claim_cursor,
                count=BATCH,
            )
        )
        self._claim_cursor = _text(answer[0])
        claimed = [(_text(entry_id), fields) for entry_id, fields in answer[1]]
        if claimed:
            return claimed
        return await self._read(">", block=True)

    async def _read(self, start: str, *, block: bool) -> list[Entry]:
        answer = await self._call(
            self._redis.xreadgroup(
                CONSUMER_GROUP,
                self.name,
                {self._key: start},
                count=BATCH,
                block=self._block_ms if block else None,
            ),
            extra_seconds=self._block_ms / 1000 if block else 0.0,
        )
        if not answer:
            return []
        _stream, entries = answer[0]
        return [(_text(entry_id), fields or None) for entry_id, fields in entries]

    async def handle(self, entry_id: str, fields: Fields) -> Erased | None:
        """Erase the user of one entry, then acknowledge it; a malformed entry is only
        logged and acknowledged (None).

        Raises:
            Exception: whatever the erasure or Redis raised (the entry stays pending).
        """
        try:
            deletion = parse(fields or {})
        except MalformedDeletionError:
            _log.error("account_deletion_malformed", entry_id=entry_id)
            await self._ack(entry_id)
            return None
        erased = await self._erase(deletion.user_id)
        await self._ack(entry_id)
        _log.info(
            "account_data_deleted",
            user_id=str(deletion.user_id),
            entry_id=entry_id,
            **{name: getattr(erased, name) for name in erased.__struct_fields__},
        )
        return erased

    async def _ack(self, entry_id: str) -> None:
        await self._call(self._redis.xack(self._key, CONSUMER_GROUP, entry_id))

    async def run_once(self) -> int:
        """One round: take entries and handle each in order; return how many.

        Raises:
            Exception: the first failure (later entries of the round stay pending too).
        """
        self.current = None
        entries = await self.next_entries()
        for entry_id, fields in entries:
            self.current = entry_id
            await self.handle(entry_id, fields)
        self.current = None
        return len(entries)

    async def trim(self) -> int:
        """Drop entries older than `RETENTION_SECONDS` (by Redis's clock) that the group has
        acknowledged: ``XTRIM key MINID <bound>``, the bound never past the group's oldest
        pending entry nor its last delivered one; remove consumers of the group with nothing
        pending that have been idle that long (replicas gone). Return the entries dropped.
        """
        groups = await self._call(self._redis.xinfo_groups(self._key))
        group = next((g for g in groups if _text(g["name"]) == CONSUMER_GROUP), None)
        if group is None:
            return 0
        seconds, microseconds = await self._call(self._redis.time())
        now_ms = seconds * 1000 + microseconds // 1000
        bounds = [(now_ms - RETENTION_SECONDS * 1000, 0)]
        milliseconds, sequence = _id(_text(group["last-delivered-id"]))
        bounds.append((milliseconds, sequence + 1))
        pending = await self._call(self._redis.xpending(self._key, CONSUMER_GROUP))
        if pending["pending"]:
            bounds.append(_id(_text(pending["min"])))
        bound = min(bounds)
        dropped: int = await self._call(
            self._redis.xtrim(self._key, minid=f"{bound[0]}-{bound[1]}", approximate=False)
        )
        consumers = await self._call(self._redis.xinfo_consumers(self._key, CONSUMER_GROUP))
        for consumer in consumers:
            name = _text(consumer["name"])
            idle = consumer["idle"] >= RETENTION_SECONDS * 1000
            if name != self.name and consumer["pending"] == 0 and idle:
                await self._call(self._redis.xgroup_delconsumer(self._key, CONSUMER_GROUP, name))
        return dropped

    async def run_forever(self) -> None:
        """Rounds until cancelled; a failure is logged and retried after `backoff_seconds`."""
        failures = 0
        trimmed_at = float("-inf")
        while True:
            try:
                await self.run_once()
                if time.monotonic() - trimmed_at >= TRIM_EVERY_SECONDS:
                    await self.trim()
                    trimmed_at = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001  # this loop must outlive any failure
                failures += 1
                self._group_ready = False  # a flushed Redis lost it: NOGROUP
                delay = backoff_seconds(failures)
                # The class only: a message may name a host, a bucket or an object key.
                _log.warning(
                    "account_deletion_failed",
                    error_type=type(exc).__name__,
                    entry_id=self.current,
                    failures=failures,
                    retry_in_seconds=round(delay, 1),
                )
                await asyncio.sleep(delay)
            else:
                if failures:
                    _log.info("account_deletion_recovered", failures=failures)
                failures = 0
