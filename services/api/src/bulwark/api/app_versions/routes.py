"""``GET /v1/app-versions``: the manifest in force at this replica, for the apps (an
"update required" screen at start-up) and for the auth service, which applies it too."""

from litestar import get
from litestar.datastructures import CacheControlHeader, State

from bulwark.common.app_versions.manifest import AppVersions, ManifestCache, published
from bulwark.common.problems import ServiceUnavailable


@get(
    "/app-versions",
    operation_id="getAppVersions",
    cache_control=CacheControlHeader(no_cache=True),
)
async def app_versions(state: State) -> AppVersions:
    """The minimum version of each platform that has one; 503 before this replica has read
    the manifest once (an empty answer would lift the policy at the auth service)."""
    manifests: ManifestCache = state.app_versions
    if manifests.current is None:
        raise ServiceUnavailable("The minimum app versions are not known yet.")
    return published(manifests.current)
