"""The minimum-app-version check of every request (docs/app-versions.md).

`AppVersionPolicy` is a Litestar middleware: it runs once the route is matched, inside
`bulwark.common.http.RequestContextMiddleware` (so every refusal has its request id and its
access line) and before the body is read, any dependency resolved, the caller authenticated
or a rate limit asked for: an outdated app costs a dictionary lookup and a version parse.

While the manifest holds no minimum, every request passes, with or without headers. Once
it holds one, `judge` applies to every route but the exempt ones (health, readiness, the
``/.well-known/`` documents, the OpenAPI schema and the manifest itself).
"""

from collections.abc import Collection
from typing import Any

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from bulwark.common.app_versions.manifest import Manifest, ManifestCache
from bulwark.common.app_versions.versions import (
    PLATFORMS,
    MalformedVersion,
    Version,
    parse_version,
    platform_named,
)
from bulwark.common.problems import FieldError, Problem, ValidationFailed

#: Route templates never checked: probes, key and discovery documents (fetched by services
#: and libraries that send no app headers), the development OpenAPI schema.
EXEMPT_ROUTES = frozenset({"/healthz", "/readyz", "/schema"})
EXEMPT_PREFIXES = ("/.well-known/", "/schema/")
#: The answers of this check depend on request headers: no cache may keep one.
_NOT_STORED = {"Cache-Control": "no-store"}


class UpgradeRequired(Problem):
    """426: the app is older than its platform's minimum version (or did not say its
    version). Carries ``platform`` and ``minimum_version`` (RFC 9457 §3.2 extension members)
    and no ``Upgrade`` header: the upgrade is of the app, not of the HTTP protocol."""

    status = 426
    title = "Upgrade Required"
    type = "urn:bulwark:problem:upgrade-required"

    def __init__(self, platform: str, minimum_version: Version) -> None:
        super().__init__(
            f"This version of the app is no longer supported; update it to "
            f"{minimum_version} or later.",
            _NOT_STORED,
        )
        self.platform = platform
        self.minimum_version = minimum_version

    def extensions(self) -> dict[str, Any]:
        """``platform`` (``ios``) and ``minimum_version`` (``3.2.0``)."""
        return {"platform": self.platform, "minimum_version": str(self.minimum_version)}


def _refused(errors: list[FieldError]) -> ValidationFailed:
    problem = ValidationFailed(errors)
    problem.headers.update(_NOT_STORED)
    return problem


def judge(manifest: Manifest | None, platforms: list[str], versions: list[str]) -> None:
    """Apply the policy to one request.

    Args:
        manifest: the minimum versions in force (None: not known yet).
        platforms: every ``X-Platform`` value of the request (normally one).
        versions: every ``X-App-Version`` value of the request (normally one).

    Raises:
        ValidationFailed: a minimum is set for some platform, and ``X-Platform`` is missing,
            repeated or not ``ios``/``android`` (any case), or the platform has a minimum and
            ``X-App-Version`` is repeated or not a SemVer 2.0.0 version of at most 64
            characters (400, naming each header).
        UpgradeRequired: the platform has a minimum and the version is below it, or is
            missing (426).
    """
    if not manifest:
        return
    if len(platforms) != 1:
        message = "must be given once" if platforms else "is required"
        raise _refused([FieldError("X-Platform", message)])
    platform = platform_named(platforms[0])
    if platform is None:
        raise _refused([FieldError("X-Platform", f"must be one of {', '.join(PLATFORMS)}")])
    minimum = manifest.get(platform)
    if minimum is None:
        return
    if not versions:
        raise UpgradeRequired(platform, minimum)
    if len(versions) > 1:
        raise _refused([FieldError("X-App-Version", "must be given once")])
    try:
        version = parse_version(versions[0])
    except MalformedVersion as malformed:
        raise _refused([FieldError("X-App-Version", str(malformed))]) from None
    if version < minimum:
        raise UpgradeRequired(platform, minimum)


def _values(scope: Scope, name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope["headers"] if key == name]


class AppVersionPolicy(ASGIMiddleware):
    """Refuse requests of outdated apps with 426, and headers that do not say which app
    with 400, on every route but the exempt ones (see `judge` and the module's docstring).

    Args:
        manifests: this process's copy of the manifest.
        exempt_routes: route templates exempt besides `EXEMPT_ROUTES` and those under
            `EXEMPT_PREFIXES` (``/v1/app-versions`` at the API, the auth service's pages).
        lenient_routes: route templates judged only when the request sends ``X-Platform``:
            endpoints that standard OAuth clients call as well as our apps (a TV's device
            flow sends no app headers; an outdated app that says so is still refused).
    """

    scopes = (ScopeType.HTTP,)

    def __init__(
        self,
        manifests: ManifestCache,
        exempt_routes: Collection[str] = (),
        lenient_routes: Collection[str] = (),
    ) -> None:
        self._manifests = manifests
        self._exempt = EXEMPT_ROUTES | frozenset(exempt_routes)
        self._lenient = frozenset(lenient_routes)

    def _exempt_route(self, scope: Scope) -> bool:
        template = str(scope.get("path_template", ""))
        if template in self._lenient:
            return not _values(scope, b"x-platform")
        return template in self._exempt or template.startswith(EXEMPT_PREFIXES)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Judge the request (raising a `Problem`, rendered by the app's handlers), then
        pass it on."""
        if not self._exempt_route(scope):
            judge(
                self._manifests.current,
                _values(scope, b"x-platform"),
                _values(scope, b"x-app-version"),
            )
        await next_app(scope, receive, send)
