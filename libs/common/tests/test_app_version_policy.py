"""The minimum-app-version check (docs/app-versions.md): the decision table of `judge`, and
the middleware in a Litestar app: it answers before the handler's body is read, renders
problem+json with the request id, and leaves the exempt routes alone."""

from typing import Any

import pytest
from litestar import Litestar, get, post
from litestar.params import JSONBody
from litestar.testing import TestClient

from bulwark.common.app_versions.manifest import Manifest, ManifestCache
from bulwark.common.app_versions.policy import AppVersionPolicy, UpgradeRequired, judge
from bulwark.common.app_versions.versions import parse_version
from bulwark.common.http import RequestContextMiddleware
from bulwark.common.problems import ValidationFailed, exception_handlers

IOS_ONLY: Manifest = {"ios": parse_version("3.2.0")}


@pytest.mark.parametrize("manifest", [None, {}])
@pytest.mark.parametrize(
    ("platforms", "versions"), [([], []), (["web"], ["x"]), (["ios"], ["1.0"]), (["a", "b"], [])]
)
def test_without_a_minimum_every_request_passes(
    manifest: Manifest | None, platforms: list[str], versions: list[str]
) -> None:
    judge(manifest, platforms, versions)


@pytest.mark.parametrize(
    ("platforms", "versions"),
    [
        (["ios"], ["3.2.0"]),
        (["iOS"], ["3.10.0"]),
        (["ios"], ["3.2.0+build.9"]),
        (["ios"], ["4.0.0-beta"]),
        (["android"], []),  # android has no minimum: its version is not checked
        (["android"], ["not a version"]),
    ],
)
def test_passes(platforms: list[str], versions: list[str]) -> None:
    judge(IOS_ONLY, platforms, versions)


@pytest.mark.parametrize(
    "versions", [["3.1.9"], ["3.2.0-rc.1"], ["3.2.0-rc.1+build.1"], ["0.0.1"], []]
)
def test_an_older_or_unnamed_version_must_upgrade(versions: list[str]) -> None:
    with pytest.raises(UpgradeRequired) as refused:
        judge(IOS_ONLY, ["ios"], versions)
    assert refused.value.extensions() == {"platform": "ios", "minimum_version": "3.2.0"}
    assert refused.value.headers == {"Cache-Control": "no-store"}


@pytest.mark.parametrize(
    ("platforms", "versions", "field"),
    [
        ([], ["9.0.0"], "X-Platform"),  # omitting the platform is no way around a minimum
        (["web"], ["9.0.0"], "X-Platform"),
        (["ios", "ios"], ["9.0.0"], "X-Platform"),
        (["android"], ["9.0.0"], None),  # passes: shown for contrast below
        (["ios"], ["3.2"], "X-App-Version"),
        (["ios"], ["03.2.0"], "X-App-Version"),
        (["ios"], ["3.2.0", "9.0.0"], "X-App-Version"),
        (["ios"], ["9" * 65], "X-App-Version"),
    ],
)
def test_malformed_headers_are_refused(
    platforms: list[str], versions: list[str], field: str | None
) -> None:
    if field is None:
        judge(IOS_ONLY, platforms, versions)
        return
    with pytest.raises(ValidationFailed) as refused:
        judge(IOS_ONLY, platforms, versions)
    assert [error.field for error in refused.value.errors] == [field]
    assert refused.value.headers["Cache-Control"] == "no-store"


# --- in a Litestar app ---------------------------------------------------------------------

bodies_read: list[bytes] = []


@post("/v1/things", status_code=200)
async def things(data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
    bodies_read.append(b"read")
    return data


@get(["/healthz", "/.well-known/jwks.json", "/v1/app-versions"])
async def exempt() -> dict[str, str]:
    return {"status": "ok"}


def _client(manifest: Manifest | None) -> TestClient[Litestar]:
    manifests = ManifestCache(source="test", refresh_seconds=30, timeout_seconds=1)
    manifests.current = manifest
    app = Litestar(
        [things, exempt],
        middleware=[AppVersionPolicy(manifests, exempt_routes={"/v1/app-versions"})],
        exception_handlers=exception_handlers,
    )
    return TestClient(RequestContextMiddleware(app))  # type: ignore[arg-type]


def test_an_outdated_app_gets_426_before_its_body_is_read() -> None:
    bodies_read.clear()
    with _client(IOS_ONLY) as client:
        response = client.post(
            "/v1/things",
            json={"a": 1},
            headers={"X-Platform": "ios", "X-App-Version": "3.1.0", "X-Request-ID": "req-1"},
        )
    assert response.status_code == 426
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["cache-control"] == "no-store"
    assert "upgrade" not in response.headers
    assert response.json() == {
        "type": "urn:bulwark:problem:upgrade-required",
        "title": "Upgrade Required",
        "status": 426,
        "detail": "This version of the app is no longer supported; update it to 3.2.0 or later.",
        "instance": "/v1/things",
        "request_id": "req-1",
        "platform": "ios",
        "minimum_version": "3.2.0",
    }
    assert bodies_read == []


def test_a_current_app_is_served() -> None:
    with _client(IOS_ONLY) as client:
        response = client.post(
            "/v1/things", json={"a": 1}, headers={"X-Platform": "ios", "X-App-Version": "3.2.0"}
        )
    assert response.status_code == 200, response.text


def test_each_malformed_platform_header_is_named_for_what_it_is() -> None:
    messages = {}
    for platforms in ([], ["web"], ["ios", "ios"]):
        with pytest.raises(ValidationFailed) as refused:
            judge(IOS_ONLY, platforms, ["9.0.0"])
        messages[len(platforms)] = refused.value.errors[0].message
    assert messages == {
        0: "is required",
        1: "must be one of ios, android",
        2: "must be given once",
    }


def test_a_request_without_headers_is_refused_once_a_minimum_is_set() -> None:
    with _client(IOS_ONLY) as client:
        response = client.post("/v1/things", json={"a": 1})
    assert response.status_code == 400
    assert response.json()["errors"] == [{"field": "X-Platform", "message": "is required"}]


@pytest.mark.security(stride="D", asvs=("V4",))
@pytest.mark.parametrize("path", ["/healthz", "/.well-known/jwks.json", "/v1/app-versions"])
def test_exempt_routes_need_no_headers(path: str) -> None:
    with _client(IOS_ONLY) as client:
        assert client.get(path).status_code == 200
