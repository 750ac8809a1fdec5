"""``GET /v1/app-versions`` publishes this replica's manifest, and answers 503 before its
first read rather than an empty manifest (which would lift the policy at the auth service)."""

import pytest
from litestar import Litestar
from litestar.datastructures import State
from litestar.testing import TestClient

from bulwark.api.app_versions.routes import app_versions
from bulwark.common.app_versions.manifest import ManifestCache
from bulwark.common.app_versions.versions import parse_version
from bulwark.common.problems import exception_handlers


@pytest.mark.security(stride="T", asvs=("V4",))
def test_the_manifest_is_published_once_it_has_been_read() -> None:
    manifests = ManifestCache(source="database", refresh_seconds=30, timeout_seconds=1)
    app = Litestar(
        [app_versions],
        state=State({"app_versions": manifests}),
        exception_handlers=exception_handlers,
    )
    with TestClient(app) as client:
        unknown = client.get("/app-versions")
        assert unknown.status_code == 503
        assert unknown.headers["retry-after"]
        manifests.current = {"ios": parse_version("3.2.0")}
        known = client.get("/app-versions")
    assert known.json() == {"minimumVersions": {"ios": "3.2.0"}}
    assert known.headers["cache-control"] == "no-cache"
