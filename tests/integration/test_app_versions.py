"""Minimum app versions (docs/app-versions.md), on real services: an operator sets a
platform's minimum with the real ``bulwark-api app-versions`` command; within the cache
bound, and without a restart, an older app gets 426 (with the platform and the minimum) at
the API and at every auth endpoint it would log in or refresh with, a current one is served,
and the headers' other answers are as documented. The auth service learns the manifest from
the API's ``GET /v1/app-versions`` and keeps the last one while the API is down.

One stack for the module, with both caches at 1 s; each test ends with no minimum set.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable, Iterator

import asyncpg
import httpx
import pytest

from bulwark.devstack.stack import console_script

from . import upload_files
from .conftest import RunningStack, StackFactory
from .helpers import MobileUser, assert_problem, bearer, login, new_request_id, register

CACHE_SECONDS = 1
#: A change is in force at the API within its cache period plus one read's deadline (3 s),
#: at auth within its own period more (plus its 2 s fetch deadline).
API_BOUND = CACHE_SECONDS + 3
AUTH_BOUND = API_BOUND + CACHE_SECONDS + 2
OLD = {"X-Platform": "ios", "X-App-Version": "3.1.9"}
CURRENT = {"X-Platform": "ios", "X-App-Version": "3.10.0"}
#: The fields an empty login body is told about when no version policy refused it first.
BODY_FIELDS = ["email", "password"]


@pytest.fixture(scope="module")
def versioned(stack_factory: StackFactory) -> RunningStack:
    """A stack whose API and auth read the manifest every second."""
    cache = {"APP_VERSIONS_CACHE_SECONDS": str(CACHE_SECONDS)}
    return stack_factory(env={"api": cache, "auth": cache})


def app_versions(stack: RunningStack, *args: str) -> subprocess.CompletedProcess[str]:
    """``bulwark-api app-versions ARGS`` against the stack's API database."""
    return subprocess.run(  # noqa: S603  # our own console script
        [console_script("bulwark-api"), "app-versions", *args],
        env={"DATABASE_URL": stack.databases["api"], "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def app_stack(versioned: RunningStack) -> Iterator[RunningStack]:
    """The module's stack, left with no minimum set by each test (cleared in SQL: the
    command is tested in the tests, and each run of it costs a second or more)."""
    yield versioned

    async def clear() -> None:
        conn = await asyncpg.connect(versioned.databases["api"], timeout=10)
        try:
            await conn.execute("DELETE FROM app_versions")
        finally:
            await conn.close()

    asyncio.run(clear())
    published = f"{versioned.api_url}/v1/app-versions"
    until(lambda: httpx.get(published).json() == {"minimumVersions": {}}, API_BOUND)
    # No header at all passes only when auth knows of no minimum either.
    until(lambda: _auth_policy(versioned, {}) == (400, BODY_FIELDS), AUTH_BOUND)


def until(done: Callable[[], bool], seconds: float) -> float:
    """Poll ``done`` until it says yes; fail after ``seconds``. Returns the seconds taken."""
    started = time.monotonic()
    while not done():
        assert time.monotonic() - started < seconds, f"not done within {seconds} s"
        time.sleep(0.1)
    return time.monotonic() - started


def set_minimum(stack: RunningStack, platform: str, version: str) -> None:
    done = app_versions(stack, "set", platform, version)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{platform}: minimum version {version}\n"


def _login(stack: RunningStack, user: MobileUser, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{stack.auth_url}/v1/auth/login",
        json={"email": user.email, "password": user.password},
        headers={"X-Device-Id": user.device_id, **headers},
    )


def _auth_policy(stack: RunningStack, headers: dict[str, str]) -> tuple[int, list[str]]:
    """What auth's login answers an empty body sent with ``headers``: the version policy's
    426, or its 400 naming a header, once a minimum is in force there; else the body's 400
    (``email``, ``password``). No login is attempted, so polling spends no login limit."""
    response = httpx.post(f"{stack.auth_url}/v1/auth/login", json={}, headers=headers)
    if response.status_code != 400:
        return response.status_code, []
    return 400, [error["field"] for error in response.json()["errors"]]


def _assert_upgrade_required(response: httpx.Response, platform: str, minimum: str) -> None:
    body = assert_problem(response, 426)
    assert body["type"] == "urn:bulwark:problem:upgrade-required"
    assert (body["platform"], body["minimum_version"]) == (platform, minimum)
    assert response.headers["cache-control"] == "no-store"
    assert "upgrade" not in response.headers


def test_an_outdated_app_is_refused_at_the_api_and_at_auth(app_stack: RunningStack) -> None:
    user = register(app_stack.auth_url)
    tokens = login(app_stack.auth_url, user)
    me = f"{app_stack.api_url}/v1/me"
    set_minimum(app_stack, "ios", "3.2.0")

    request_id = new_request_id("outdated")
    waited = until(
        lambda: httpx.get(me, headers={**bearer(tokens["access_token"]), **OLD}).status_code == 426,
        API_BOUND,
    )
    refused = httpx.get(
        me, headers={**bearer(tokens["access_token"]), **OLD, "X-Request-ID": request_id}
    )
    _assert_upgrade_required(refused, "ios", "3.2.0")
    assert httpx.get(me, headers={**bearer(tokens["access_token"]), **CURRENT}).status_code == 200
    until(lambda: _auth_policy(app_stack, OLD)[0] == 426, AUTH_BOUND - waited)
    _assert_upgrade_required(_login(app_stack, user, OLD), "ios", "3.2.0")
    token_endpoint = f"{app_stack.auth_url}/oauth2/token"
    form = {"grant_type": "refresh_token", "refresh_token": str(tokens["refresh_token"])}
    old, current = {**user.headers, **OLD}, {**user.headers, **CURRENT}
    _assert_upgrade_required(httpx.post(token_endpoint, data=form, headers=old), "ios", "3.2.0")
    # A standard OAuth client (a TV, a web app) sends no app headers: served there, and the
    # pages are never checked (docs/oauth.md).
    unsent = httpx.post(token_endpoint, data={**form, "refresh_token": "brt_" + "A" * 43})
    assert unsent.status_code == 400
    assert unsent.json()["error"] == "invalid_grant"
    assert httpx.get(f"{app_stack.auth_url}/signin").status_code == 200
    # So are the pages a mail's link opens, and their forms (refused here for their CSRF).
    link_page = f"{app_stack.auth_url}/account/reset-password"
    assert httpx.get(link_page, params={"token": "A" * 43}).status_code == 200
    assert httpx.post(link_page, data={"token": "A" * 43}).status_code == 403
    logout = httpx.post(
        f"{app_stack.auth_url}/v1/auth/logout", headers={**bearer(tokens["access_token"]), **OLD}
    )
    _assert_upgrade_required(logout, "ios", "3.2.0")
    # The refused refresh spent nothing: the token still works for a current app.
    refreshed = httpx.post(token_endpoint, data=form, headers=current)
    assert refreshed.status_code == 200, refreshed.text
    assert _login(app_stack, user, CURRENT).status_code == 200
    # The refusal has its access line, with the request id the client sent.
    lines = [json.loads(line) for line in app_stack.log("api").splitlines() if request_id in line]
    assert [(line["status"], line["route"]) for line in lines] == [(426, "/v1/me")]


def test_a_change_is_in_force_within_the_cache_bound_without_restart(
    app_stack: RunningStack,
) -> None:
    user = register(app_stack.auth_url)
    me = f"{app_stack.api_url}/v1/me"
    headers = {**bearer(login(app_stack.auth_url, user)["access_token"]), **OLD}
    set_minimum(app_stack, "ios", "3.2.0")
    until(lambda: httpx.get(me, headers=headers).status_code == 426, API_BOUND)
    set_minimum(app_stack, "ios", "3.1.9-rc.1")  # 3.1.9 is above its own pre-release
    until(lambda: httpx.get(me, headers=headers).status_code == 200, API_BOUND)
    until(lambda: _auth_policy(app_stack, OLD) == (400, BODY_FIELDS), AUTH_BOUND)
    assert _login(app_stack, user, OLD).status_code == 200
    assert app_versions(app_stack, "unset", "ios").returncode == 0
    until(lambda: _auth_policy(app_stack, {}) == (400, BODY_FIELDS), AUTH_BOUND)
    assert _login(app_stack, user, {}).status_code == 200


@pytest.mark.security(stride="T", asvs=("V4",))
def test_the_manifest_is_published_for_apps_and_auth(app_stack: RunningStack) -> None:
    set_minimum(app_stack, "android", "2.0.0+build.7")
    url = f"{app_stack.api_url}/v1/app-versions"
    expected = {"minimumVersions": {"android": "2.0.0+build.7"}}
    until(lambda: httpx.get(url).json() == expected, API_BOUND)
    response = httpx.get(url)  # no app headers: an app reads it before it knows its fate
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache"
    listed = app_versions(app_stack, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["platform"], r["minimum_version"]) for r in rows] == [("android", "2.0.0+build.7")]


@pytest.mark.security(stride="T", asvs=("V4",))
def test_headers_that_do_not_say_which_app_are_answered_as_documented(
    app_stack: RunningStack,
) -> None:
    user = register(app_stack.auth_url)
    set_minimum(app_stack, "android", "2.0.0")
    until(lambda: _auth_policy(app_stack, {}) == (400, ["X-Platform"]), AUTH_BOUND)
    cases: list[tuple[dict[str, str], int, str | None]] = [
        ({}, 400, "X-Platform"),  # omitting the platform does not get around a minimum
        ({"X-App-Version": "9.0.0"}, 400, "X-Platform"),
        ({"X-Platform": "web", "X-App-Version": "9.0.0"}, 400, "X-Platform"),
        ({"X-Platform": "android", "X-App-Version": "2.0"}, 400, "X-App-Version"),
        ({"X-Platform": "android", "X-App-Version": "02.0.0"}, 400, "X-App-Version"),
        ({"X-Platform": "android", "X-App-Version": "2." + "0" * 70}, 400, "X-App-Version"),
        ({"X-Platform": "android"}, 426, None),  # no version: older than any minimum
        ({"X-Platform": "Android", "X-App-Version": "2.0.0"}, 200, None),
        ({"X-Platform": "ios"}, 200, None),  # ios has no minimum
    ]
    for headers, status, field in cases:
        for response in (
            _login(app_stack, user, headers),
            httpx.post(f"{app_stack.api_url}/v1/notes", json={"title": "t"}, headers=headers),
        ):
            if status == 200:
                assert response.status_code in {200, 401}, (headers, response.text)
                continue
            body = assert_problem(response, status)
            if field is not None:
                errors = body["errors"]
                assert isinstance(errors, list)
                assert [error["field"] for error in errors] == [field], headers
    # Probes, keys, discovery and the metrics stay reachable without any header.
    for url in (
        f"{app_stack.api_url}/healthz",
        f"{app_stack.api_url}/readyz",
        f"{app_stack.auth_url}/healthz",
        f"{app_stack.auth_url}/readyz",
        f"{app_stack.auth_url}/.well-known/jwks.json",
        f"{app_stack.auth_url}/.well-known/oauth-authorization-server",
        str(app_stack.config.metrics_url("api")),
    ):
        assert httpx.get(url).status_code == 200, url


@pytest.mark.security(stride="T", asvs=("V2.2",))
def test_the_command_refuses_what_is_not_a_version(app_stack: RunningStack) -> None:
    # Every malformed form is refused by the same check (services/api/tests/test_cli.py).
    refused = app_versions(app_stack, "set", "ios", "01.2.3")
    assert refused.returncode == 2, refused.stdout
    assert "argument version: '01.2.3' is not a semantic version" in refused.stderr
    assert app_versions(app_stack, "list").stdout == "platform\tminimum_version\tupdated_at\n"
    nothing = app_versions(app_stack, "unset", "ios")
    assert (nothing.returncode, nothing.stderr) == (1, "app-versions unset: ios has no minimum\n")


@pytest.mark.security(stride="D", asvs=("V4",))
def test_auth_keeps_the_last_manifest_while_the_api_is_down(app_stack: RunningStack) -> None:
    user = register(app_stack.auth_url)
    set_minimum(app_stack, "ios", "3.2.0")
    until(lambda: _auth_policy(app_stack, OLD)[0] == 426, AUTH_BOUND)
    app_stack.stack.stop_service("api")
    try:
        # Auth's reads fail now (the first failure is logged); the manifest stays in force.
        until(lambda: "app_versions_unavailable" in app_stack.log("auth"), AUTH_BOUND)
        assert _login(app_stack, user, OLD).status_code == 426
        assert _login(app_stack, user, CURRENT).status_code == 200
    finally:
        app_stack.stack.start_service("api")


@pytest.mark.security(stride="D", asvs=("V4",))
def test_the_local_backends_object_urls_are_not_judged(app_stack: RunningStack) -> None:
    """A pre-signed URL stands in for S3's, which no version check guards: the app's HTTP
    library may send it without the app's headers, and the URL is the credential."""
    user = register(app_stack.auth_url)
    headers = {**bearer(login(app_stack.auth_url, user)["access_token"], user), **CURRENT}
    set_minimum(app_stack, "ios", "3.2.0")
    me = f"{app_stack.api_url}/v1/me"
    until(lambda: httpx.get(me, headers={**headers, **OLD}).status_code == 426, API_BOUND)
    data = upload_files.png()
    body = {"filename": "a.png", "contentType": "image/png", "size": len(data)}
    created = httpx.post(f"{app_stack.api_url}/v1/uploads", json=body, headers=headers)
    assert created.status_code == 201, created.text
    put = created.json()["uploadRequest"]
    stored = httpx.put(put["url"], content=data, headers=put["headers"])  # no app headers
    assert stored.status_code == 200, stored.text
