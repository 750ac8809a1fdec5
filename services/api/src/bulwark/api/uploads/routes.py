"""HTTP routes for uploads: create, complete, read, delete; owner only (docs/uploads.md).

Another user's upload answers 404 exactly like one that does not exist, and each such 404 is
reported to the anomaly detector (``not_found``), which runs in the background.
"""

import uuid
from typing import Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from bulwark.api.anomalies.checks import not_found
from bulwark.api.idempotency import IdempotencyKey
from bulwark.api.uploads.schemas import Upload, UploadCreate, UploadCreated, upload_of
from bulwark.api.uploads.service import UploadService
from bulwark.common.access_tokens import AccessTokenClaims
from bulwark.common.problems import NotFound


def _missing(
    request: Request[Any, Any, Any], caller: AccessTokenClaims, upload_id: uuid.UUID, action: str
) -> NotFound:
    not_found(request, caller, "upload", upload_id, action)
    return NotFound("No such upload.")


class UploadController(Controller):
    """``/v1/uploads`` (mounted under the ``/v1`` router)."""

    path = "/uploads"

    @post(operation_id="createUpload", status_code=201)
    async def create(
        self,
        data: JSONBody[UploadCreate],
        uploads: NamedDependency[UploadService],
        caller: NamedDependency[AccessTokenClaims],
        idempotency_key: NamedDependency[IdempotencyKey | None],
    ) -> Response[UploadCreated]:
        """Declare a file (name, content type, size in bytes) and get a pre-signed PUT URL
        for it, bound to that type and length and valid for at most 15 minutes. Refused
        (400): a type not allowed, an extension not of that type, a size over the limit, an
        unsafe filename (docs/uploads.md). Once per ``Idempotency-Key``: a retry gets the
        same upload with a new URL, or 409 once it is complete or deleted."""
        return await uploads.create(caller.sub, data, idempotency_key)

    @post(
        "/{upload_id:uuid}/complete",
        operation_id="completeUpload",
        status_code=200,
        opt={"answers": (409, 422)},
    )
    async def complete(
        self,
        request: Request[Any, Any, Any],
        upload_id: FromPath[uuid.UUID],
        uploads: NamedDependency[UploadService],
        caller: NamedDependency[AccessTokenClaims],
    ) -> Upload:
        """Check the uploaded file (size, magic bytes, an image's dimensions and decoding)
        and mark the upload complete, with a download URL. 409 when nothing was uploaded
        yet; 422 when the file is not what was declared (it is then deleted)."""
        done = await uploads.complete(caller.sub, upload_id)
        if done is None:
            raise _missing(request, caller, upload_id, "complete")
        return upload_of(*done)

    @get("/{upload_id:uuid}", operation_id="getUpload")
    async def read(
        self,
        request: Request[Any, Any, Any],
        upload_id: FromPath[uuid.UUID],
        uploads: NamedDependency[UploadService],
        caller: NamedDependency[AccessTokenClaims],
    ) -> Upload:
        """One of the caller's uploads; once complete, with a short-lived download URL that
        answers ``Content-Disposition: attachment`` (404 for anyone else's)."""
        found = await uploads.read(caller.sub, upload_id)
        if found is None:
            raise _missing(request, caller, upload_id, "read")
        return upload_of(*found)

    @delete("/{upload_id:uuid}", operation_id="deleteUpload", status_code=204)
    async def remove(
        self,
        request: Request[Any, Any, Any],
        upload_id: FromPath[uuid.UUID],
        uploads: NamedDependency[UploadService],
        caller: NamedDependency[AccessTokenClaims],
    ) -> None:
        """Delete one of the caller's uploads, its stored file first."""
        if not await uploads.delete(caller.sub, upload_id):
            raise _missing(request, caller, upload_id, "delete")
