"""Where uploads' bytes live: the `ObjectStorage` interface and its S3 backend.

A client never sends a file through the API's handlers: it gets a pre-signed PUT URL bound
to one key, content type and length, and later a pre-signed GET URL that forces a download.
The API itself only reads an object back once (bounded) to check it, and deletes objects.
The local backend for development is in `bulwark.api.uploads.local_storage`.
"""

import asyncio
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, Protocol

import boto3
import msgspec
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from bulwark.api.uploads.config import S3Config
from bulwark.api.uploads.rules import owner_prefixes
from bulwark.common.problems import ServiceUnavailable

if TYPE_CHECKING:  # the stubs are a development dependency
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

#: Server-side encryption asked of S3 on every PUT (S3-managed keys); the header is signed.
SERVER_SIDE_ENCRYPTION: Final = "AES256"


class PresignedRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A request a client may make without our token: ``method`` on ``url``, sending exactly
    ``headers`` (they are part of the signature), until ``expires_at`` (Unix seconds)."""

    method: str
    url: str
    headers: dict[str, str]
    expires_at: int


class StorageUnavailableError(Exception):
    """The storage did not answer in time or failed."""


class ObjectStorage(Protocol):
    """What uploads need of a storage backend. Keys come from `rules.object_key` (where
    clients PUT) and `rules.file_key` (what the API checked and serves)."""

    async def presign_put(
        self, key: str, content_type: str, content_length: int, expires_in: int
    ) -> PresignedRequest:
        """A PUT of exactly ``content_length`` bytes of ``content_type`` to ``key``, valid
        for ``expires_in`` seconds.

        Raises:
            StorageUnavailableError: no credentials to sign with.
        """
        ...

    async def presign_get(
        self, key: str, content_type: str, disposition: str, expires_in: int
    ) -> PresignedRequest:
        """A GET of ``key`` answered with ``content_type`` and ``Content-Disposition:
        disposition``, valid for ``expires_in`` seconds.

        Raises:
            StorageUnavailableError: no credentials to sign with.
        """
        ...

    async def read(self, key: str, limit: int) -> bytes | None:
        """At most the first ``limit`` bytes of ``key``; None when there is no such object.

        Raises:
            StorageUnavailableError: the storage failed or did not answer in time.
        """
        ...

    async def write(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` (the bytes the API checked) as ``key``, of ``content_type``.

        Raises:
            StorageUnavailableError: the storage failed or did not answer in time.
        """
        ...

    async def delete(self, key: str) -> None:
        """Delete ``key`` (nothing when it does not exist).

        Raises:
            StorageUnavailableError: the storage failed or did not answer in time.
        """
        ...

    async def delete_owned(self, owner_id: uuid.UUID) -> int:
        """Delete every object of ``owner_id`` (every key under `rules.owner_prefixes`, also
        one no record names any more) and return how many there were; 0 when none.

        Raises:
            StorageUnavailableError: the storage failed or did not answer in time (some
                objects may be gone already: call again).
        """
        ...

    async def aclose(self) -> None:
        """Release the backend's connections."""
        ...


def unavailable() -> ServiceUnavailable:
    """The 503 answered when the storage fails."""
    return ServiceUnavailable("File storage is unavailable; retry shortly.")


class S3Storage:
    """`ObjectStorage` on an S3 bucket through boto3.

    Every call has a connect and a read timeout of ``config.timeout`` seconds and at most
    two attempts, and runs in a worker thread (boto3 blocks). The bucket must be private
    (Block Public Access on): objects are reached only through pre-signed URLs (SigV4 query
    authentication, at most 7 days by AWS's rule, far less here). A PUT URL signs
    ``Content-Type``, ``Content-Length`` and ``x-amz-server-side-encryption``, so S3 refuses
    a request with another type, length or no encryption; a GET URL sets the response's
    ``Content-Type`` and ``Content-Disposition`` (``response-*`` parameters). S3 cannot add
    ``X-Content-Type-Options`` per response: a CDN in front may (docs/uploads.md).
    """

    def __init__(self, config: S3Config) -> None:
        """A client for ``config.bucket``; connects nothing until the first call."""
        self._bucket = config.bucket
        self._client = boto3.session.Session().client(
            "s3",
            region_name=config.region,
            endpoint_url=config.endpoint_url,
            config=Config(
                signature_version="s3v4",
                connect_timeout=config.timeout,
                read_timeout=config.timeout,
                retries={"max_attempts": 2, "mode": "standard"},
                s3={"addressing_style": "path" if config.endpoint_url else "auto"},
            ),
        )

    async def presign_put(
        self, key: str, content_type: str, content_length: int, expires_in: int
    ) -> PresignedRequest:
        """See `ObjectStorage.presign_put`. Signing calls no S3, but may resolve credentials
        (a web identity or instance role) the first time: in a worker thread too."""
        params = {
            "Bucket": self._bucket,
            "Key": key,
            "ContentType": content_type,
            "ContentLength": content_length,
            "ServerSideEncryption": SERVER_SIDE_ENCRYPTION,
        }
        url = await self._presign("put_object", params, expires_in)
        headers = {
            "Content-Type": content_type,
            "Content-Length": str(content_length),
            "x-amz-server-side-encryption": SERVER_SIDE_ENCRYPTION,
        }
        return PresignedRequest(
            method="PUT", url=url, headers=headers, expires_at=int(time.time()) + expires_in
        )

    async def presign_get(
        self, key: str, content_type: str, disposition: str, expires_in: int
    ) -> PresignedRequest:
        """See `ObjectStorage.presign_get` (signed like `presign_put`)."""
        params = {
            "Bucket": self._bucket,
            "Key": key,
            "ResponseContentType": content_type,
            "ResponseContentDisposition": disposition,
            "ResponseCacheControl": "private, no-store",
        }
        url = await self._presign("get_object", params, expires_in)
        return PresignedRequest(
            method="GET", url=url, headers={}, expires_at=int(time.time()) + expires_in
        )

    async def _presign(self, operation: str, params: Mapping[str, object], expires_in: int) -> str:
        try:
            url: str = await asyncio.to_thread(
                self._client.generate_presigned_url,
                operation,
                Params=params,
                ExpiresIn=expires_in,
            )
        except BotoCoreError as error:  # no credentials, or they could not be fetched
            raise StorageUnavailableError(str(error)) from None
        return url

    async def read(self, key: str, limit: int) -> bytes | None:
        """See `ObjectStorage.read`: one ranged GET (``bytes=0-<limit - 1>``)."""
        return await asyncio.to_thread(self._read, key, limit)

    def _read(self, key: str, limit: int) -> bytes | None:
        try:
            response = self._client.get_object(
                Bucket=self._bucket, Key=key, Range=f"bytes=0-{limit - 1}"
            )
            with response["Body"] as body:
                data: bytes = body.read(limit)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code in {"NoSuchKey", "404"}:
                return None
            if code == "InvalidRange":  # an empty object
                return b""
            raise StorageUnavailableError(str(error)) from None
        except BotoCoreError as error:
            raise StorageUnavailableError(str(error)) from None
        return data

    async def write(self, key: str, data: bytes, content_type: str) -> None:
        """See `ObjectStorage.write`: one PUT, with server-side encryption."""
        try:
            await asyncio.to_thread(
                self._client.put_object,
                Bucket=self._bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                ServerSideEncryption=SERVER_SIDE_ENCRYPTION,
            )
        except (ClientError, BotoCoreError) as error:
            raise StorageUnavailableError(str(error)) from None

    async def delete(self, key: str) -> None:
        """See `ObjectStorage.delete`."""
        try:
            await asyncio.to_thread(self._client.delete_object, Bucket=self._bucket, Key=key)
        except (ClientError, BotoCoreError) as error:
            raise StorageUnavailableError(str(error)) from None

    async def delete_owned(self, owner_id: uuid.UUID) -> int:
        """See `ObjectStorage.delete_owned`: each prefix listed (``ListObjectsV2``, 1,000
        keys a page) and each page deleted in one ``DeleteObjects``; needs
        ``s3:ListBucket`` on the bucket besides ``s3:DeleteObject``."""
        return await asyncio.to_thread(self._delete_owned, owner_id)

    def _delete_owned(self, owner_id: uuid.UUID) -> int:
        deleted = 0
        try:
            for prefix in owner_prefixes(owner_id):
                pages = self._client.get_paginator("list_objects_v2").paginate(
                    Bucket=self._bucket, Prefix=prefix, PaginationConfig={"PageSize": 1000}
                )
                for page in pages:
                    keys: list[ObjectIdentifierTypeDef] = [
                        {"Key": item["Key"]} for item in page.get("Contents", [])
                    ]
                    if not keys:
                        continue
                    answer = self._client.delete_objects(
                        Bucket=self._bucket, Delete={"Objects": keys, "Quiet": True}
                    )
                    if answer.get("Errors"):
                        raise StorageUnavailableError("some objects were not deleted")
                    deleted += len(keys)
        except (ClientError, BotoCoreError) as error:
            raise StorageUnavailableError(str(error)) from None
        return deleted

    async def aclose(self) -> None:
        """Close the client's connection pool."""
        self._client.close()
