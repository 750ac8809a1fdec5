"""Each process's copy of the minimum-app-version manifest (docs/app-versions.md): a failed
or slow read keeps the last manifest, is logged once per outage and counted; the background
refresh picks a change up; the auth service's reader refuses anything but the API's shape.

The API's endpoint is played by httpx.MockTransport (no sockets); loaders are coroutines."""

import asyncio
from collections.abc import Iterator

import httpx
import msgspec
import pytest
import structlog
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest

from bulwark.common import metrics
from bulwark.common.app_versions.manifest import (
    Manifest,
    ManifestCache,
    fetch_manifest,
    published,
)
from bulwark.common.app_versions.versions import parse_version

V3 = parse_version("3.2.0")


@pytest.fixture
def exposition() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    provider = MeterProvider(
        metric_readers=[PrometheusMetricReader(scope_info_enabled=False, registry=registry)]
    )
    metrics.install(provider)
    yield registry
    metrics.uninstall()
    provider.shutdown()


class Store:
    """Where the manifest is kept: it can fail, hang, or change."""

    def __init__(self) -> None:
        self.manifest: Manifest = {"ios": V3}
        self.failing = False
        self.hanging = False
        self.reads = 0

    async def load(self) -> Manifest:
        self.reads += 1
        if self.hanging:
            await asyncio.Event().wait()
        if self.failing:
            raise OSError("connection refused")
        return self.manifest


def _cache(refresh_seconds: float = 30) -> ManifestCache:
    return ManifestCache(source="database", refresh_seconds=refresh_seconds, timeout_seconds=0.05)


async def test_nothing_is_known_before_the_first_read() -> None:
    store, cache = Store(), _cache()
    store.failing = True
    assert not await cache.refresh(store.load)
    assert cache.current is None


async def test_a_failed_read_keeps_the_last_manifest_logs_once_and_counts(
    exposition: CollectorRegistry,
) -> None:
    store, cache = Store(), _cache()
    assert await cache.refresh(store.load)
    store.failing = True
    with structlog.testing.capture_logs() as logs:
        assert not await cache.refresh(store.load)
        assert not await cache.refresh(store.load)
        assert cache.current == {"ios": V3}
        store.failing = False
        store.manifest = {}
        assert await cache.refresh(store.load)
    assert [(line["event"], line.get("reason")) for line in logs] == [
        ("app_versions_unavailable", "OSError"),
        ("app_versions_recovered", None),
    ]
    assert cache.current == {}
    text = generate_latest(exposition).decode()
    assert 'bulwark_app_versions_refresh_failures_total{source="database"} 2.0' in text


async def test_a_hanging_read_ends_at_its_deadline_and_keeps_the_last_manifest() -> None:
    store, cache = Store(), _cache()
    await cache.refresh(store.load)
    store.hanging = True
    async with asyncio.timeout(1):
        assert not await cache.refresh(store.load)
    assert cache.current == {"ios": V3}


async def test_a_change_is_picked_up_in_the_background_until_the_block_ends() -> None:
    store, cache = Store(), _cache(refresh_seconds=0.02)
    async with cache.kept_fresh(store.load):
        assert cache.current == {"ios": V3}  # read before the block starts
        store.manifest = {"android": V3}
        async with asyncio.timeout(2):
            while cache.current != {"android": V3}:  # noqa: ASYNC110  # bounded poll
                await asyncio.sleep(0.01)
    reads = store.reads
    await asyncio.sleep(0.05)
    assert store.reads == reads  # the refresh task has ended


def test_the_refresh_interval_is_at_most_30_seconds() -> None:
    with pytest.raises(ValueError, match="refresh_seconds"):
        _cache(refresh_seconds=31)


def _client(status: int, body: bytes) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(status, content=body))
    )


async def test_the_published_manifest_is_read_back() -> None:
    manifest: Manifest = {"ios": V3, "android": parse_version("2.0.0-rc.1")}
    body = published(manifest)
    async with _client(200, msgspec.json.encode(body)) as client:
        assert await fetch_manifest(client, "http://api/v1/app-versions") == manifest
    assert msgspec.json.encode(body) == (
        b'{"minimumVersions":{"android":"2.0.0-rc.1","ios":"3.2.0"}}'
    )


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (503, b"{}", httpx.HTTPStatusError),
        (200, b'{"minimumVersions":{"ios":"3.2"}}', ValueError),
        (200, b'{"minimumVersions":{"web":"3.2.0"}}', ValueError),
        (200, b'{"minimumVersions":{"ios":"3.2.0"},"extra":1}', ValueError),
        (200, b'{"minimumVersions":{"ios":"3.2.0"}}' + b" " * 5000, ValueError),
        (200, b"[]", ValueError),
    ],
)
@pytest.mark.security(stride="D", asvs=("V4",))
async def test_anything_else_is_a_failed_read(status: int, body: bytes, error: type) -> None:
    async with _client(status, body) as client:
        with pytest.raises(error):
            await fetch_manifest(client, "http://api/v1/app-versions")
