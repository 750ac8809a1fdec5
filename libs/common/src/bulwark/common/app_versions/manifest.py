"""The manifest of minimum app versions, and each process's copy of it.

The resource API keeps the manifest in its database (``bulwark-api app-versions``) and
publishes it at ``GET /v1/app-versions`` (`AppVersions`); the auth service reads it there
(`fetch_manifest`), never in the API's database. Each process holds a `ManifestCache`,
refreshed in the background every ``refresh_seconds`` (at most `MAX_REFRESH_SECONDS`): a
request never waits for a refresh, and each refresh waits at most ``timeout_seconds``.

When a refresh fails (the database or the API down, slow, or answering nonsense) the
process keeps the last manifest it had, logs the outage once (``app_versions_unavailable``
and ``app_versions_recovered``), counts each failure
(``bulwark_app_versions_refresh_failures_total``) and tries again every
`RETRY_SECONDS`. Before its first successful read a process knows no minimum and refuses
no version (docs/app-versions.md says why).
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Annotated

import httpx
import msgspec

from bulwark.common.app_versions.versions import (
    MAX_VERSION_LENGTH,
    Platform,
    Version,
    parse_version,
)
from bulwark.common.background import running
from bulwark.common.metrics import count_app_versions_refresh_failure
from bulwark.common.outages import OutageLog
from bulwark.common.schemas import Schema

#: The minimum version of each platform that has one; a platform not in it has none.
Manifest = Mapping[Platform, Version]
#: A function reading the manifest from where it is kept (raises on any failure).
ManifestLoader = Callable[[], Awaitable[Manifest]]
#: Longest a process may keep a manifest before reading it again, in seconds.
MAX_REFRESH_SECONDS = 30
#: Seconds between attempts after a failed refresh (or ``refresh_seconds`` if shorter).
RETRY_SECONDS = 2.0
#: Largest ``GET /v1/app-versions`` body read, in bytes (it is a few dozen).
MAX_MANIFEST_BYTES = 4096


class AppVersions(Schema, frozen=True):
    """``GET /v1/app-versions``: ``{"minimumVersions": {"ios": "3.2.0"}}``; a platform with
    no minimum is absent."""

    minimum_versions: dict[Platform, Annotated[str, msgspec.Meta(max_length=MAX_VERSION_LENGTH)]]


def published(manifest: Manifest) -> AppVersions:
    """``manifest`` as the body of ``GET /v1/app-versions``."""
    return AppVersions(minimum_versions={p: str(v) for p, v in sorted(manifest.items())})


async def fetch_manifest(client: httpx.AsyncClient, url: str) -> Manifest:
    """The manifest published at ``url`` (``GET /v1/app-versions``), within ``client``'s
    timeout.

    Raises:
        httpx.HTTPError: the call failed or was not answered 200.
        ValueError: the body is too long, not an `AppVersions`, or holds a malformed
            version (`msgspec.ValidationError`, `MalformedVersion` are ValueErrors).
    """
    content = bytearray()
    async with client.stream("GET", url) as response:
        response.raise_for_status()
        async for chunk in response.aiter_bytes():
            content += chunk
            if len(content) > MAX_MANIFEST_BYTES:  # read no further
                raise ValueError("the manifest is too long")
    body = msgspec.json.decode(content, type=AppVersions)
    return {platform: parse_version(text) for platform, text in body.minimum_versions.items()}


class ManifestCache:
    """This process's copy of the manifest (see the module's docstring).

    Args:
        source: names the manifest's origin in logs and metrics (``database``, ``api``).
        refresh_seconds: how long a manifest is kept before it is read again (1 to
            `MAX_REFRESH_SECONDS`).
        timeout_seconds: the longest wait for one read; past it the read has failed.
    """

    def __init__(self, *, source: str, refresh_seconds: float, timeout_seconds: float) -> None:
        if not 0 < refresh_seconds <= MAX_REFRESH_SECONDS:
            raise ValueError(f"refresh_seconds must be in (0, {MAX_REFRESH_SECONDS}]")
        self._source = source
        self._refresh_seconds = refresh_seconds
        self._timeout_seconds = timeout_seconds
        self._outage = OutageLog(
            "app_versions_unavailable", "app_versions_recovered", {"source": source}
        )
        self.current: Manifest | None = None
        """The last manifest read, or None before the first successful read."""

    async def refresh(self, load: ManifestLoader) -> bool:
        """Read the manifest with ``load`` (at most ``timeout_seconds``); keep it and return
        True, or keep the previous one and return False. Never raises for ``load``."""
        try:
            async with asyncio.timeout(self._timeout_seconds):
                manifest = await load()
        except Exception as exc:  # noqa: BLE001  # any failure keeps the last manifest
            count_app_versions_refresh_failure(self._source)
            self._outage.failed(type(exc).__name__)
            return False
        self.current = dict(manifest)
        self._outage.succeeded()
        return True

    @asynccontextmanager
    async def kept_fresh(self, load: ManifestLoader) -> AsyncIterator[None]:
        """Read the manifest once, then again in a background task every
        ``refresh_seconds`` (every `RETRY_SECONDS` after a failure) until the block ends."""
        fresh = await self.refresh(load)

        async def refresh_forever() -> None:
            nonlocal fresh
            while True:
                wait = self._refresh_seconds if fresh else RETRY_SECONDS
                await asyncio.sleep(min(wait, self._refresh_seconds))
                fresh = await self.refresh(load)

        async with running(refresh_forever(), name=f"app-versions-{self._source}"):
            yield
