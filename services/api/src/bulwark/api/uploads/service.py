"""The uploads use cases: create, complete, read, delete. The routes only map HTTP to these.

Order of work when a check fails: ``complete`` deletes the object, then the record, so a
rejected upload leaves nothing behind (a retry starts with a new ``POST /v1/uploads``).
``delete`` removes the object before the record: when the storage fails, the record stays
and the client can retry, rather than an object nobody can reach any more.
"""

import asyncio
import uuid

import asyncpg
from litestar import Response

from bulwark.api.idempotency import Created, IdempotencyKey, create_once
from bulwark.api.replica import NotesDatabases
from bulwark.api.uploads import queries
from bulwark.api.uploads.check_process import (
    CheckLimits,
    CheckUnavailableError,
    check_in_process,
    memory_ceiling,
)
from bulwark.api.uploads.config import UploadConfig
from bulwark.api.uploads.contents import MAX_JPEG_SCANS, ContentRejectedError
from bulwark.api.uploads.local_storage import LocalStorage
from bulwark.api.uploads.rules import (
    check_declaration,
    content_disposition,
    file_key,
    object_key,
)
from bulwark.api.uploads.schemas import (
    Upload,
    UploadCreate,
    UploadCreated,
    signed_request,
    upload_of,
)
from bulwark.api.uploads.storage import (
    ObjectStorage,
    PresignedRequest,
    S3Storage,
    StorageUnavailableError,
    unavailable,
)
from bulwark.common.db import Database, DatabaseUnavailable, Record
from bulwark.common.outages import OutageLog
from bulwark.common.problems import Conflict, Problem, ServiceUnavailable

#: Seconds after its declaration that an upload still pending is deleted with its object
#: (its PUT URL expired long before): a day.
ABANDONED_SECONDS = 24 * 3600
#: Seconds between two sweeps of abandoned uploads, and the most one sweep deletes.
SWEEP_SECONDS = 300.0
SWEEP_BATCH = 100

#: Objects checked at once by one process (each holds up to ``UPLOADS_MAX_BYTES`` here and
#: a child process decoding it, `check_process`): more wait their turn.
CONCURRENT_CHECKS = 2


class UploadRejected(Problem):  # a problem (RFC 9457), not an error
    """422: the stored object is not what was declared; it has been deleted."""

    status = 422
    title = "Unprocessable Content"
    type = "urn:bulwark:problem:upload-rejected"


class UploadService:
    """Uploads of every user over ``databases`` and ``storage``, within ``config``."""

    def __init__(
        self,
        databases: NotesDatabases,
        storage: ObjectStorage,
        config: UploadConfig,
        *,
        queue_timeout_seconds: float = 2.0,
    ) -> None:
        """Nothing is connected here. A ``complete`` waits at most ``queue_timeout_seconds``
        for one of the `CONCURRENT_CHECKS` check slots (``HTTP_QUEUE_TIMEOUT_SECONDS``)."""
        self._db = databases
        self._storage = storage
        self._config = config
        self._checks = asyncio.Semaphore(CONCURRENT_CHECKS)
        self._queue_timeout = queue_timeout_seconds

    async def create(
        self, owner: str, declared: UploadCreate, key: IdempotencyKey | None
    ) -> Response[UploadCreated]:
        """Record a pending upload of ``owner`` and sign the PUT of its bytes, once per
        ``key`` (`create_once`): a replay signs a new PUT URL for the same upload while it
        is pending.

        Raises:
            ValidationFailed: the declaration breaks a rule (`rules.check_declaration`).
            ServiceUnavailable: the storage cannot sign (503; nothing is recorded).
            Conflict: a replay whose upload is complete or deleted (409: a complete upload's
                bytes are never replaced, and a URL for them is not issued again).
            IdempotencyKeyInUse, IdempotencyKeyReused: see `create_once` (409, 422).
        """
        check_declaration(declared.filename, declared.content_type, declared.size, self._config)
        owner_id = uuid.UUID(owner)

        async def insert(conn: asyncpg.Connection) -> Created[Upload]:
            upload_id = uuid.uuid4()
            row = await queries.insert_upload(
                conn,
                upload_id=upload_id,
                owner_id=owner_id,
                object_key=object_key(owner_id, upload_id),
                filename=declared.filename,
                content_type=declared.content_type,
                size=declared.size,
            )
            return Created(upload_of(row))

        async def with_put_url(conn: asyncpg.Connection, upload: Upload) -> UploadCreated:
            row = await queries.get_upload(conn, owner_id, uuid.UUID(upload.id))
            if row is None or row["state"] != "pending":
                raise Conflict(
                    "The upload this Idempotency-Key created is complete or deleted; "
                    "start a new upload with a new key."
                )
            try:
                put = await self._storage.presign_put(
                    row["object_key"],
                    row["content_type"],
                    row["size"],
                    self._config.put_url_seconds,
                )
            except StorageUnavailableError:
                raise unavailable() from None  # rolled back: nothing is recorded
            return UploadCreated(upload=upload_of(row), upload_request=signed_request(put))

        return await self._db.write(
            owner,
            lambda primary: create_once(primary, key, declared, Upload, insert, with_put_url),
        )

    async def read(
        self, owner: str, upload_id: uuid.UUID
    ) -> tuple[Record, PresignedRequest | None] | None:
        """``owner``'s upload and, once complete, a download URL; None when not found."""
        owner_id = uuid.UUID(owner)
        row = await self._db.read(owner, lambda conn: queries.get_upload(conn, owner_id, upload_id))
        if row is None:
            return None
        return row, await self._download(row)

    async def complete(
        self, owner: str, upload_id: uuid.UUID
    ) -> tuple[Record, PresignedRequest | None] | None:
        """Check the stored object against the declaration and mark the upload complete;
        None when not found. A complete upload is answered as it is.

        Raises:
            Conflict: nothing has been uploaded yet (409; the upload stays pending).
            UploadRejected: the object is not what was declared (422; object and record
                are deleted).
            ServiceUnavailable: the storage failed, or every check slot stayed busy for the
                queue timeout (503, ``Retry-After``; the upload stays pending).
        """
        owner_id = uuid.UUID(owner)
        row = await self._db.write(
            owner, lambda conn: queries.get_upload(conn, owner_id, upload_id)
        )
        if row is None:
            return None
        if row["state"] == "pending":
            checked = await self._check(owner, row)

            async def keep_checked(primary: Database) -> Record | None:
                # Under the row's lock, so that a concurrent delete either runs first (no
                # row: nothing is written) or after (and deletes what was written).
                async with primary.transaction() as conn:
                    locked = await queries.lock_upload(conn, owner_id, upload_id)
                    if locked is None or locked["state"] != "pending":
                        return locked
                    # The checked bytes, not the PUT key's: a PUT URL lives on after this.
                    await self._write(
                        file_key(owner_id, upload_id), checked, locked["content_type"]
                    )
                    return await queries.mark_complete(conn, owner_id, upload_id)

            row = await self._db.write(owner, keep_checked)
            if row is None:  # deleted meanwhile
                return None
            await self._delete_object(row["object_key"])
        return row, await self._download(row)

    async def delete(self, owner: str, upload_id: uuid.UUID) -> bool:
        """Delete ``owner``'s upload, objects first, under the row's lock (see `complete`);
        False when not found.

        Raises:
            ServiceUnavailable: the storage failed (503; the upload is kept).
        """
        owner_id = uuid.UUID(owner)

        async def locked_delete(primary: Database) -> bool:
            async with primary.transaction() as conn:
                row = await queries.lock_upload(conn, owner_id, upload_id)
                if row is None:
                    return False
                await self._delete_object(file_key(owner_id, upload_id))
                await self._delete_object(row["object_key"])
                return await queries.delete_upload(conn, owner_id, upload_id)

        return await self._db.write(owner, locked_delete)

    async def delete_abandoned(self, older_than_seconds: float = ABANDONED_SECONDS) -> int:
        """Delete up to `SWEEP_BATCH` uploads still pending ``older_than_seconds`` after
        they were declared, each object before its record (a record is kept when its
        object could not be deleted, for the next sweep); return how many were deleted. An
        upload completed meanwhile is kept (only its PUT key's object, never served, goes).

        Raises:
            DatabaseUnavailable: the database failed.
            StorageUnavailableError: the storage failed.
        """
        rows = await queries.abandoned_uploads(self._db.primary, older_than_seconds, SWEEP_BATCH)
        deleted = 0
        for row in rows:
            await self._storage.delete(row["object_key"])
            await self._storage.delete(file_key(row["owner_id"], row["id"]))  # a failed commit's
            deleted += await queries.delete_pending_upload(self._db.primary, row["id"])
        return deleted

    async def _check(self, owner: str, row: Record) -> bytes:
        """The object's bytes, once checked against the declaration (see `complete`), in
        one of the check slots: a caller that finds none free within the queue timeout is
        refused, so slow files from one user hold the others up for a bounded time only."""
        try:
            async with asyncio.timeout(self._queue_timeout):
                await self._checks.acquire()
        except TimeoutError:
            raise ServiceUnavailable("Every file check is busy; retry shortly.") from None
        try:
            return await self._check_in_slot(owner, row)
        finally:
            self._checks.release()

    async def _check_in_slot(self, owner: str, row: Record) -> bytes:
        size = int(row["size"])
        try:
            data = await self._storage.read(row["object_key"], size + 1)
        except StorageUnavailableError:
            raise unavailable() from None
        if data is None:
            raise Conflict("Nothing has been uploaded yet: PUT the file to its upload URL.")
        limits = CheckLimits(
            seconds=self._config.check_seconds,
            max_pixels=self._config.max_pixels,
            max_scans=MAX_JPEG_SCANS,
            memory_bytes=memory_ceiling(self._config.max_pixels),
        )
        try:
            await check_in_process(
                data, declared_type=row["content_type"], declared_size=size, limits=limits
            )
        except CheckUnavailableError:
            raise ServiceUnavailable("Files cannot be checked now; retry shortly.") from None
        except ContentRejectedError as rejected:
            await self._reject(owner, row["id"])
            raise UploadRejected(f"{rejected} The upload has been deleted.") from None
        return data

    async def _reject(self, owner: str, upload_id: uuid.UUID) -> None:
        """Delete a rejected upload's object and, while it is still pending, its record,
        under the row's lock (see `complete`: a concurrent ``complete`` of other bytes, PUT
        since, may have made it complete; its checked file then stays)."""
        owner_id = uuid.UUID(owner)

        async def locked_reject(primary: Database) -> None:
            async with primary.transaction() as conn:
                row = await queries.lock_upload(conn, owner_id, upload_id)
                if row is None:
                    return
                await self._delete_object(row["object_key"])
                if row["state"] == "pending":
                    await queries.delete_upload(conn, owner_id, upload_id)

        await self._db.write(owner, locked_reject)

    async def _download(self, row: Record) -> PresignedRequest | None:
        if row["state"] != "complete":
            return None
        try:
            return await self._storage.presign_get(
                file_key(row["owner_id"], row["id"]),
                row["content_type"],
                content_disposition(row["filename"]),
                self._config.get_url_seconds,
            )
        except StorageUnavailableError:
            raise unavailable() from None

    async def _write(self, key: str, data: bytes, content_type: str) -> None:
        try:
            await self._storage.write(key, data, content_type)
        except StorageUnavailableError:
            raise unavailable() from None

    async def _delete_object(self, key: str) -> None:
        try:
            await self._storage.delete(key)
        except StorageUnavailableError:
            raise unavailable() from None


def open_storage(config: UploadConfig, base_url: str) -> ObjectStorage | None:
    """The backend ``config`` names: S3, the local folder whose URLs start with
    ``base_url`` (the API's own, e.g. ``http://127.0.0.1:8000``), or None (uploads off)."""
    if config.backend == "off":
        return None
    if config.s3 is not None:
        return S3Storage(config.s3)
    return LocalStorage.open(config, base_url)


async def sweep_abandoned_forever(uploads: UploadService) -> None:
    """Every `SWEEP_SECONDS`, `UploadService.delete_abandoned` until fewer than a batch
    are left, until cancelled. Each call is bounded (the database's and the storage's
    timeouts); a failing sweep is logged once per outage and retried at the next period."""
    failures = OutageLog("upload_sweep_failed", "upload_sweep_recovered")
    while True:
        try:
            while await uploads.delete_abandoned() == SWEEP_BATCH:
                pass
        except (DatabaseUnavailable, asyncpg.PostgresError, StorageUnavailableError) as exc:
            failures.failed(type(exc).__name__)
        else:
            failures.succeeded()
        await asyncio.sleep(SWEEP_SECONDS)
