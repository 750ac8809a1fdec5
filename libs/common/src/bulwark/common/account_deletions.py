"""Account deletions, from the auth service to the API, over a Redis stream (issue 15).

The auth service owns accounts; the API owns notes and uploads and knows a user only by the
access token's ``sub``. When an account is deleted, the auth service (after ending every
session) appends one entry to the stream `stream_key` (``{REDIS_KEY_PREFIX}account-deletions``;
both services use the same prefix) with `publish`::

    user_id     the account's id, as UUID text (``8e03978e-...``)
    deleted_at  when it was deleted, RFC 3339 in UTC (``2026-12-07T16:57:50.123456Z``)

The API reads the stream in the consumer group `CONSUMER_GROUP` and deletes everything it
holds of that user, then acknowledges the entry (``bulwark.api.account_deletions``; docs/
account-deletion.md). Delivery is at least once: an entry may be handled twice (a replica
that died before its ``XACK``), so handling is idempotent; a producer that is unsure whether
its ``XADD`` went through simply publishes again.

Retention: `publish` never trims (no ``MAXLEN``), so no entry is dropped before the API has
handled it; the API trims entries it has acknowledged once they are older than its retention
(``XTRIM MINID``). The stream lives in Redis only: Redis must persist it (AOF) and must not
evict it (``maxmemory-policy noeviction``), or the producer must be able to publish a lost
deletion again from its own records.
"""

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

import msgspec
import redis.asyncio
from redis.typing import EncodableT, FieldT

#: The stream's key after the services' ``REDIS_KEY_PREFIX``.
STREAM_NAME: Final = "account-deletions"
#: The API's consumer group on the stream (one group; its replicas are its consumers).
CONSUMER_GROUP: Final = "bulwark-api"
#: The entry's fields.
USER_ID: Final = "user_id"
DELETED_AT: Final = "deleted_at"


class AccountDeletion(msgspec.Struct, frozen=True, kw_only=True):
    """One deletion: ``user_id`` (the token's ``sub``) deleted at ``deleted_at`` (UTC)."""

    user_id: uuid.UUID
    deleted_at: datetime


class MalformedDeletionError(ValueError):
    """A stream entry that is not a deletion (missing field, not a UUID, not a UTC time)."""


def stream_key(prefix: str) -> str:
    """The stream's Redis key: ``f"{prefix}account-deletions"`` (``bulwark:account-deletions``
    with the default prefix)."""
    return f"{prefix}{STREAM_NAME}"


def rfc3339_utc(moment: datetime) -> str:
    """``moment`` as RFC 3339 text in UTC with a ``Z`` (``2026-12-07T16:57:50.123456Z``).

    Raises:
        ValueError: ``moment`` has no time zone (a naive time is ambiguous).
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("deleted_at must carry a time zone")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def publish(
    redis: redis.asyncio.Redis, prefix: str, user_id: uuid.UUID, deleted_at: datetime
) -> str:
    """Append the deletion of ``user_id`` to `stream_key` (``XADD key * user_id ...
    deleted_at ...``, never trimmed) and return the entry's id (``1765126670123-0``).

    The call is bounded by ``redis``'s own timeouts (`bulwark.common.redis_clients.
    bounded_redis`); publishing the same deletion twice is harmless.

    Raises:
        ValueError: ``deleted_at`` has no time zone.
        redis.exceptions.RedisError: Redis failed or did not answer in time (the entry may
            or may not have been added: publish again).
    """
    fields: dict[FieldT, EncodableT] = {
        USER_ID: str(user_id),
        DELETED_AT: rfc3339_utc(deleted_at),
    }
    entry_id = await redis.xadd(stream_key(prefix), fields)
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def parse(fields: Mapping[bytes, bytes] | Mapping[str, str]) -> AccountDeletion:
    """The deletion an entry's ``fields`` carry (keys and values as bytes or text; other
    fields are ignored, for a later version of the producer).

    Raises:
        MalformedDeletionError: ``user_id`` or ``deleted_at`` is missing or malformed.
    """
    try:
        text = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in fields.items()
        }
        user_id = uuid.UUID(text[USER_ID])
        deleted_at = datetime.fromisoformat(text[DELETED_AT])
    except (KeyError, ValueError):  # UnicodeDecodeError is a ValueError
        raise MalformedDeletionError("not an account deletion") from None
    if deleted_at.utcoffset() is None:
        raise MalformedDeletionError("deleted_at has no time zone")
    return AccountDeletion(user_id=user_id, deleted_at=deleted_at.astimezone(UTC))
