"""Request and response bodies for uploads (camelCase on the wire)."""

from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec

from bulwark.api.uploads.storage import PresignedRequest
from bulwark.common.db import Record
from bulwark.common.schemas import Schema

#: Longest filename accepted by the schema, in characters (the rules then count bytes).
MAX_FILENAME_CHARACTERS = 255


class UploadCreate(Schema, frozen=True):
    """``POST /v1/uploads``: what the client is about to send."""

    filename: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_FILENAME_CHARACTERS)]
    content_type: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    #: In bytes.
    size: Annotated[int, msgspec.Meta(ge=1, le=2**40)]


class SignedRequest(Schema, frozen=True):
    """A pre-signed request: send ``method`` to ``url`` with exactly ``headers`` before
    ``expiresAt``."""

    method: str
    url: str
    headers: dict[str, str]
    expires_at: datetime


class Upload(Schema, frozen=True):
    """An upload as shown to its owner. ``download`` is set once it is complete."""

    id: str
    filename: str
    content_type: str
    size: int
    state: Literal["pending", "complete"]
    created_at: datetime
    completed_at: datetime | None
    download: SignedRequest | None = None


class UploadCreated(Schema, frozen=True):
    """``POST /v1/uploads``: the new upload and where to PUT its bytes."""

    upload: Upload
    upload_request: SignedRequest


def signed_request(request: PresignedRequest) -> SignedRequest:
    """The answer's form of a pre-signed request."""
    return SignedRequest(
        method=request.method,
        url=request.url,
        headers=request.headers,
        expires_at=datetime.fromtimestamp(request.expires_at, UTC),
    )


def upload_of(row: Record, download: PresignedRequest | None = None) -> Upload:
    """An upload's record (`bulwark.api.uploads.queries`) as answered, with its download."""
    return Upload(
        id=str(row["id"]),
        filename=row["filename"],
        content_type=row["content_type"],
        size=row["size"],
        state=row["state"],
        created_at=row["created_at"],
        completed_at=row["completed_at"],
        download=signed_request(download) if download else None,
    )
