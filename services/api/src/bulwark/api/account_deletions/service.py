"""Erase one user's data: the use case the stream consumer runs for each deletion.

Order: the user's objects first (every key under the user's prefixes, listed from the
storage itself, so objects no record names any more go too), then every row in one
transaction, then the objects once more, for one that a request still in flight wrote in
between. A crash at any point leaves work that the next run (the entry is not acknowledged)
does again; nothing is left that a later run could not find, because objects are found by
the user's prefix, not through the rows. Running it twice is harmless: the second run finds
nothing.
"""

import uuid

import msgspec

from bulwark.api.account_deletions import queries
from bulwark.api.uploads.storage import ObjectStorage
from bulwark.common.db import Database
from bulwark.common.logging import get_logger

_log = get_logger(__name__)


class Erased(msgspec.Struct, frozen=True, kw_only=True):
    """What one erasure deleted: objects in storage, and rows of each table."""

    objects: int
    uploads: int
    notes: int
    idempotency_keys: int
    anomaly_flags: int


async def erase_user(db: Database, storage: ObjectStorage | None, user_id: uuid.UUID) -> Erased:
    """Delete everything the API keeps of ``user_id`` (objects, then rows in one transaction;
    see the module's docstring) and say how much there was. With uploads off (``storage``
    None), the rows go and objects cannot be reached: logged as
    ``account_deletion_objects_unreachable`` when the user had uploads.

    Raises:
        DatabaseUnavailable, asyncpg.PostgresError: the database failed (rows kept).
        StorageUnavailableError: the storage failed (rows kept; some objects may be gone).
    """
    objects = 0 if storage is None else await storage.delete_owned(user_id)
    async with db.transaction() as conn:
        rows = await queries.delete_user_rows(conn, user_id)
    if storage is not None:
        objects += await storage.delete_owned(user_id)
    elif rows["uploads"]:
        _log.warning(
            "account_deletion_objects_unreachable", user_id=str(user_id), uploads=rows["uploads"]
        )
    return Erased(objects=objects, **rows)
