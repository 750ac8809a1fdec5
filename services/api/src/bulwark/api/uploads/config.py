"""What uploads are configured with (``UPLOADS_*`` and ``S3_*``; docs/uploads.md)."""

from pathlib import Path
from typing import Literal

import msgspec

#: The content types the API can verify (magic bytes, then Pillow or the PDF header), with
#: the file extensions that go with each. ``UPLOADS_CONTENT_TYPES`` picks among these only.
KNOWN_TYPES: dict[str, frozenset[str]] = {
    "image/jpeg": frozenset({".jpg", ".jpeg"}),
    "image/png": frozenset({".png"}),
    "image/gif": frozenset({".gif"}),
    "image/webp": frozenset({".webp"}),
    "application/pdf": frozenset({".pdf"}),
}
#: The longest a pre-signed PUT URL may live, in seconds (issue 12: within 15 minutes).
MAX_PUT_URL_SECONDS = 900


class S3Config(msgspec.Struct, frozen=True, kw_only=True):
    """An S3 (or S3-compatible) bucket; credentials come from boto3's usual chain
    (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a web identity token, an instance role).

    Attributes:
        bucket: the bucket's name (``S3_BUCKET``); it must block public access.
        region: its region (``S3_REGION``, default ``us-east-1``).
        endpoint_url: another endpoint than AWS's (``S3_ENDPOINT_URL``; a local S3 in tests).
        timeout: connect and read timeout of each call to S3, in seconds
            (``S3_TIMEOUT_SECONDS``, default 5).
    """

    bucket: str
    region: str = "us-east-1"
    endpoint_url: str | None = None
    timeout: float = 5.0


class UploadConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Limits and storage of uploads.

    Attributes:
        backend: ``local`` (development and test only), ``s3``, or ``off`` (no upload
            routes) (``UPLOADS_BACKEND``; default ``local`` in development and test, else
            ``s3`` when ``S3_BUCKET`` is set, else ``off``).
        content_types: the accepted content types, a subset of `KNOWN_TYPES`
            (``UPLOADS_CONTENT_TYPES``, comma-separated; default: all of them).
        max_bytes: the largest upload, in bytes (``UPLOADS_MAX_BYTES``, default 10 MiB).
        max_pixels: the most pixels (width times height) an image may have
            (``UPLOADS_MAX_PIXELS``, default 50 million: a 48-megapixel phone photo passes).
        check_seconds: the wall-clock seconds a content check may take on ``complete``
            before it is killed and the upload refused (``UPLOADS_CHECK_SECONDS``,
            default 10).
        put_url_seconds: lifetime of a pre-signed PUT URL (``UPLOADS_PUT_URL_SECONDS``,
            default and maximum 900).
        get_url_seconds: lifetime of a pre-signed download URL (``UPLOADS_GET_URL_SECONDS``,
            default 300, maximum 3600).
        local_dir: the local backend's folder (``UPLOADS_DIR``, default ``.bulwark/uploads``):
            objects under ``uploads/``, and ``signing.key`` when no key is given.
        signing_key: the local backend's HMAC key (``UPLOADS_SIGNING_KEY``, at least 32
            characters); None generates one into ``local_dir`` on first start.
        s3: the bucket, with the ``s3`` backend.
    """

    backend: Literal["local", "s3", "off"] = "local"
    content_types: tuple[str, ...] = tuple(KNOWN_TYPES)
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 50_000_000
    check_seconds: float = 10.0
    put_url_seconds: int = MAX_PUT_URL_SECONDS
    get_url_seconds: int = 300
    local_dir: Path = Path(".bulwark/uploads")
    signing_key: str | None = None
    s3: S3Config | None = None

    def extensions(self, content_type: str) -> frozenset[str]:
        """The file extensions (``.png``) accepted with ``content_type``; empty when the
        type is not accepted."""
        if content_type not in self.content_types:
            return frozenset()
        return KNOWN_TYPES[content_type]
