"""The local-disk `ObjectStorage` for development and test, and the routes that serve it.

It behaves like S3's pre-signed URLs: the API signs a grant (method, key, expiry, content
type and length, or the download's type and disposition) with HMAC-SHA256 into a token, and
serves ``PUT`` and ``GET /v1/upload-objects/{token}`` itself. A token is refused (403, as S3
does) when its signature is wrong or it has expired; a PUT also when its ``Content-Type`` or
``Content-Length`` differs from the signed ones. A PUT is streamed to a temporary file, never
past the signed length, and renamed into place only when complete. A GET is a download:
``Content-Disposition: attachment``, the signed ``Content-Type``, ``nosniff`` and a CSP
sandbox.

The key is ``UPLOADS_SIGNING_KEY``, or one generated into ``<UPLOADS_DIR>/signing.key``
(mode 0600; ``.bulwark/`` is git-ignored) on first start. The settings refuse this backend
outside development and test: its objects live on one machine's disk.
"""

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import anyio
import msgspec
from litestar import Controller, Request, Response, get, put
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from litestar.response import File

from bulwark.api.uploads.config import UploadConfig
from bulwark.api.uploads.rules import owner_prefixes
from bulwark.api.uploads.storage import PresignedRequest, StorageUnavailableError
from bulwark.common.problems import NotFound, Problem
from bulwark.common.request_bodies import check_query_string

#: Where the routes are mounted, under ``/v1``.
OBJECTS_PATH = "/upload-objects"
#: Longest token accepted, in characters (ours are about 400 with a long filename).
MAX_TOKEN_LENGTH = 2048
_KEY = re.compile(r"(uploads|files)/[0-9a-f-]{36}/[0-9a-f-]{36}\Z")
_TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}\Z")
_DOMAIN = b"bulwark-upload-object\n"  # keeps these MACs apart from any other use of the key
_CHUNK_BYTES = 64 * 1024


class ObjectAccessDenied(Problem):  # a problem, named like S3's error
    """403: the object URL is forged, expired, or used with other headers than signed."""

    status = 403
    title = "Forbidden"


class ObjectGrant(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """What a token allows: ``method`` on ``key`` until ``expires`` (Unix seconds), with
    ``content_type``; a PUT of exactly ``content_length`` bytes, a GET answered with
    ``disposition``."""

    method: Literal["PUT", "GET"]
    key: str
    expires: int
    content_type: str
    content_length: int = 0
    disposition: str = ""


class LocalStorage:
    """`ObjectStorage` in a folder, with URLs under ``base_url`` + ``/v1/upload-objects``."""

    def __init__(self, root: Path, signing_key: bytes, base_url: str) -> None:
        """Objects under ``root`` (``root/uploads/<owner>/<id>``)."""
        self._root = root
        self._key = signing_key
        self._base = f"{base_url.rstrip('/')}/v1{OBJECTS_PATH}/"

    @classmethod
    def open(cls, config: UploadConfig, base_url: str) -> "LocalStorage":
        """The storage of ``config.local_dir``, with ``config.signing_key`` or the key file
        in that folder (made when missing, by exactly one of several starting processes)."""
        root = config.local_dir
        root.mkdir(parents=True, exist_ok=True)
        if config.signing_key is not None:
            return cls(root, config.signing_key.encode(), base_url)
        key_file = root / "signing.key"
        if not key_file.exists():
            draft = root / f".signing.key.{secrets.token_hex(8)}"
            draft.write_bytes(secrets.token_bytes(32))
            draft.chmod(0o600)
            with contextlib.suppress(FileExistsError):
                os.link(draft, key_file)  # atomic: the first process's key wins
            draft.unlink()
        return cls(root, key_file.read_bytes(), base_url)

    def sign(self, grant: ObjectGrant) -> str:
        """The URL token of ``grant``: ``base64url(payload).base64url(HMAC-SHA256)``."""
        payload = _b64(msgspec.json.encode(grant))
        mac = hmac.new(self._key, _DOMAIN + payload.encode(), hashlib.sha256).digest()
        return f"{payload}.{_b64(mac)}"

    def verify(self, token: str, method: str) -> ObjectGrant:
        """The grant of ``token`` for ``method``.

        Raises:
            ObjectAccessDenied: malformed, forged, for another method, or expired.
        """
        if len(token) > MAX_TOKEN_LENGTH or not _TOKEN.fullmatch(token):
            raise ObjectAccessDenied("The object URL is not valid.")
        payload, mac = token.split(".")
        wanted = hmac.new(self._key, _DOMAIN + payload.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(_b64(wanted), mac):
            raise ObjectAccessDenied("The object URL is not valid.")
        grant = msgspec.json.decode(_unb64(payload), type=ObjectGrant)
        if grant.method != method or not _KEY.fullmatch(grant.key):
            raise ObjectAccessDenied("The object URL is not valid for this request.")
        if time.time() >= grant.expires:
            raise ObjectAccessDenied("The object URL has expired.")
        return grant

    def path(self, key: str) -> Path:
        """The file of ``key`` (a key of `rules.object_key` or `rules.file_key` only)."""
        if not _KEY.fullmatch(key):
            raise ValueError("not an upload key")
        return self._root / key

    async def presign_put(
        self, key: str, content_type: str, content_length: int, expires_in: int
    ) -> PresignedRequest:
        """See `ObjectStorage.presign_put`."""
        expires = int(time.time()) + expires_in
        grant = ObjectGrant("PUT", key, expires, content_type, content_length=content_length)
        headers = {"Content-Type": content_type, "Content-Length": str(content_length)}
        return PresignedRequest(
            method="PUT", url=self._base + self.sign(grant), headers=headers, expires_at=expires
        )

    async def presign_get(
        self, key: str, content_type: str, disposition: str, expires_in: int
    ) -> PresignedRequest:
        """See `ObjectStorage.presign_get`."""
        expires = int(time.time()) + expires_in
        grant = ObjectGrant("GET", key, expires, content_type, disposition=disposition)
        return PresignedRequest(
            method="GET", url=self._base + self.sign(grant), headers={}, expires_at=expires
        )

    async def read(self, key: str, limit: int) -> bytes | None:
        """See `ObjectStorage.read`."""
        return await asyncio.to_thread(self._read, self.path(key), limit)

    @staticmethod
    def _read(path: Path, limit: int) -> bytes | None:
        try:
            with path.open("rb") as file:
                return file.read(limit)
        except FileNotFoundError:
            return None

    async def write(self, key: str, data: bytes, content_type: str) -> None:
        """See `ObjectStorage.write`: to a temporary file beside it, renamed into place."""
        await asyncio.to_thread(self._write, self.path(key), data)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{secrets.token_hex(8)}.part")
        try:
            draft.write_bytes(data)
            draft.replace(path)
        finally:
            draft.unlink(missing_ok=True)

    async def delete(self, key: str) -> None:
        """See `ObjectStorage.delete`."""
        await asyncio.to_thread(self.path(key).unlink, missing_ok=True)

    async def delete_owned(self, owner_id: uuid.UUID) -> int:
        """See `ObjectStorage.delete_owned`: the owner's folders go too, with any partial
        file of a PUT that was cut short (not counted)."""
        return await asyncio.to_thread(self._delete_owned, owner_id)

    def _delete_owned(self, owner_id: uuid.UUID) -> int:
        deleted = 0
        try:
            for prefix in owner_prefixes(owner_id):
                folder = self._root / prefix
                if not folder.is_dir():
                    continue
                for path in folder.iterdir():
                    deleted += bool(_KEY.fullmatch(prefix + path.name))
                    path.unlink(missing_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    folder.rmdir()
        except OSError as error:  # a file PUT meanwhile (not empty), a permission
            raise StorageUnavailableError(type(error).__name__) from None
        return deleted

    async def aclose(self) -> None:
        """Nothing to release."""

    async def receive(self, grant: ObjectGrant, request: Request[Any, Any, Any]) -> None:
        """Stream ``request``'s body into ``grant.key``: to a temporary file beside it, at
        most ``grant.content_length`` bytes, renamed into place when exactly that many came.

        Raises:
            ObjectAccessDenied: more or fewer bytes than signed.
        """
        final = self.path(grant.key)
        await anyio.Path(final.parent).mkdir(parents=True, exist_ok=True)
        draft = final.with_name(f".{final.name}.{secrets.token_hex(8)}.part")
        received = 0
        try:
            async with await anyio.open_file(draft, "wb") as file:
                async for chunk in request.stream():
                    received += len(chunk)
                    if received > grant.content_length:
                        raise ObjectAccessDenied("The body is longer than the signed length.")
                    await file.write(chunk)
            if received != grant.content_length:
                raise ObjectAccessDenied("The body is shorter than the signed length.")
            await anyio.Path(draft).replace(final)
        finally:
            await anyio.Path(draft).unlink(missing_ok=True)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _local_storage(state: State) -> LocalStorage:
    storage: LocalStorage = state.upload_storage
    return storage


class UploadObjectController(Controller):
    """``/v1/upload-objects/{token}``: the local backend's pre-signed URLs. Mounted only with
    ``UPLOADS_BACKEND=local``; not part of the API's contract (S3 serves these in
    production), so left out of the OpenAPI document. No bearer token: the URL is the
    credential, as with S3."""

    path = OBJECTS_PATH
    include_in_schema = False
    # A class attribute, as Litestar reads it (RUF012 wants ClassVar, which Controller types not).
    dependencies = {"objects": Provide(_local_storage, sync_to_thread=False)}  # noqa: RUF012

    @staticmethod
    async def before_request(request: Request[Any, Any, Any]) -> None:
        """These routes take raw bodies: only the query string gets the app-wide check."""
        check_query_string(request.scope.get("query_string", b""))

    @put("/{token:str}", operation_id="putUploadObject", request_max_body_size=None)
    async def put_object(
        self,
        request: Request[Any, Any, Any],
        token: FromPath[str],
        objects: NamedDependency[LocalStorage],
    ) -> Response[bytes]:
        """Store the body, as signed in ``token`` (its size bound by the signed length)."""
        grant = objects.verify(token, "PUT")
        if request.headers.get("content-type") != grant.content_type:
            raise ObjectAccessDenied("Content-Type is not the signed one.")
        if request.headers.get("content-length") != str(grant.content_length):
            raise ObjectAccessDenied("Content-Length is not the signed one.")
        await objects.receive(grant, request)
        return Response(b"", status_code=200)

    @get("/{token:str}", operation_id="getUploadObject")
    async def get_object(
        self, token: FromPath[str], objects: NamedDependency[LocalStorage]
    ) -> File:
        """The object of ``token``, as a download."""
        grant = objects.verify(token, "GET")
        path = objects.path(grant.key)
        if not await anyio.Path(path).is_file():
            raise NotFound("No such object.")
        return File(
            path,
            media_type=grant.content_type,
            headers={
                "content-disposition": grant.disposition,
                "x-content-type-options": "nosniff",
                "content-security-policy": "default-src 'none'; sandbox",
                "cache-control": "private, no-store",
            },
        )
