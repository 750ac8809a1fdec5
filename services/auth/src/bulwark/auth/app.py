"""The auth service's application factory."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import httpx
from joserfc.jwk import ECKey, RSAKey
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.di import Provide

from bulwark.auth.account.deletion import relay_forever
from bulwark.auth.account.routes import AccountController, SignedInAccountController
from bulwark.auth.anomalies.checks import LoginAnomalies
from bulwark.auth.keys import KeyFolder, SigningKeys
from bulwark.auth.mail.delivery import deliver_forever
from bulwark.auth.oauth.errors import OAuthError
from bulwark.auth.oauth.routes import DiscoveryController, OAuthController, on_oauth_error
from bulwark.auth.oauth.sweep import sweep_forever
from bulwark.auth.pages.account import ACCOUNT_PAGE_PATHS, AccountPagesController
from bulwark.auth.pages.forms import UnreadablePageRequestError, on_bad_page_request
from bulwark.auth.pages.routes import PagesController
from bulwark.auth.passwords import PasswordHasher
from bulwark.auth.sessions.ending import SessionEnder
from bulwark.auth.sessions.revocations import resync_forever
from bulwark.auth.sessions.routes import SessionController
from bulwark.auth.settings import APP_VERSIONS_TIMEOUT_SECONDS, AuthSettings, from_env
from bulwark.auth.users.breached_passwords import PwnedPasswordsRange
from bulwark.auth.users.password_policy import PasswordPolicy
from bulwark.auth.users.routes import UserController
from bulwark.common.access_tokens import AccessTokenVerifier
from bulwark.common.allow import answer_options, first_answer
from bulwark.common.app_versions.manifest import ManifestCache, fetch_manifest
from bulwark.common.app_versions.policy import AppVersionPolicy
from bulwark.common.background import BackgroundChecks, running
from bulwark.common.db import Database, open_database
from bulwark.common.health import healthz
from bulwark.common.http import ASGIApp, RequestContextMiddleware
from bulwark.common.migrations import SchemaCheck
from bulwark.common.openapi import document
from bulwark.common.problems import exception_handlers
from bulwark.common.ratelimit_client import RateLimitClient
from bulwark.common.request_bodies import strict_json_bodies
from bulwark.common.revocations import (
    SessionRevocations,
    entry_lifetime,
    revoked_key_lifetime,
)

MIGRATIONS = Path(__file__).parent / "migrations"
#: Database connections of the anomaly detectors, apart from the request pool.
DETECTOR_CONNECTIONS = 2
#: Largest request body accepted, in bytes; every auth request is a small form or JSON.
MAX_BODY_BYTES = 16 * 1024
#: The pages, opened in browsers, which send no app headers: never judged by the minimum
#: app version (docs/app-versions.md). The account pages are opened from mails.
PAGE_ROUTES = ("/signin", "/device", "/oauth2/authorize", *ACCOUNT_PAGE_PATHS)
#: The OAuth endpoints that standard clients (TVs, web apps, OAuth libraries) call without
#: our app headers: judged only when a request says which app it is (``X-Platform``).
STANDARD_CLIENT_ROUTES = ("/oauth2/token", "/oauth2/revoke", "/oauth2/device_authorization")


class LocalKeys:
    """The auth service verifies its own tokens against its own keys, not over HTTP."""

    def __init__(self, keys: SigningKeys) -> None:
        self._keys = keys

    async def get(self, kid: str) -> ECKey | RSAKey | None:
        """The published key named ``kid``, or None."""
        return self._keys.public_key(kid)


@get("/readyz", operation_id="readyz", include_in_schema=False)
async def readyz(state: State) -> dict[str, str]:
    """Readiness: the database answers within its deadline and its schema is current
    (``bulwark-auth migrate`` has run); 503 otherwise. Signing keys are loaded before the
    service starts."""
    await state.db.ensure_ready()
    await state.schema.ensure_current()
    return {"status": "ready"}


def create_app(settings: AuthSettings) -> ASGIApp:
    """The auth service as an ASGI app; pools and clients open in its lifespan."""
    # The API's manifest, read from its GET /v1/app-versions, never from its database.
    manifests = ManifestCache(
        source="api",
        refresh_seconds=settings.app_versions_cache_seconds,
        timeout_seconds=APP_VERSIONS_TIMEOUT_SECONDS,
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        key_folder = KeyFolder(
            settings.keys_dir, settings.environment, generate=settings.generates_keys
        )
        keys = key_folder.keys
        db = await open_database(
            settings.database_url,
            max_size=settings.database_pool_size,
            timeout_seconds=settings.database_timeout,
            pool_mode=settings.database_pool_mode,
        )
        hasher = PasswordHasher(
            memory_kib=settings.argon2_memory_kib,
            time_cost=settings.argon2_time_cost,
            parallelism=settings.argon2_parallelism,
        )
        ratelimit = RateLimitClient(
            settings.ratelimit_target, "bulwark-auth", timeout_seconds=settings.ratelimit_timeout
        )
        revocations = SessionRevocations(
            settings.redis_url,
            key_prefix=settings.redis_key_prefix,
            timeout_seconds=settings.redis_timeout,
        )
        # The detectors have connections of their own: their lookups never queue with
        # requests for the request pool (docs/anomalies.md).
        detector_db = await open_database(
            settings.database_url,
            name="detectors",
            max_size=DETECTOR_CONNECTIONS,
            timeout_seconds=settings.database_timeout,
            pool_mode=settings.database_pool_mode,
        )
        login_anomalies = LoginAnomalies(detector_db, settings)
        manifest_client = httpx.AsyncClient(timeout=APP_VERSIONS_TIMEOUT_SECONDS)
        # Password-reset lookups run after their 202 (docs/account.md), bounded in number.
        account_work = BackgroundChecks(limit=64, timeout_seconds=10.0)
        password_policy = PasswordPolicy(
            settings.password_policy,
            app_name=settings.app_name,
            breached=(
                PwnedPasswordsRange(settings.hibp_range_url, timeout_seconds=settings.hibp_timeout)
                if settings.breach_check == "hibp"
                else None
            ),
            unreachable=settings.breach_check_unreachable,
        )
        revocation_resync: asyncio.Task[None] | None = None
        key_watcher: asyncio.Task[None] | None = None
        try:
            # Ended sessions are listed in Redis again and again, so the API's check heals.
            revocation_resync = asyncio.create_task(
                resync_forever(
                    db,
                    revocations,
                    access_token_ttl=settings.access_token_ttl,
                    interval_seconds=settings.revocation_resync_interval,
                    recent_kids=lambda: key_folder.recently_removed(
                        revoked_key_lifetime(settings.access_token_ttl)
                    ),
                ),
                name="revocation-resync",
            )

            # KEYS_DIR changes (rotate, revoke, a Secret update) apply without a restart.
            # A key that leaves the folder is listed as revoked, so the API refuses its tokens
            # within a second even while its JWKS cache still holds the key.
            async def publish_removed(kids: list[str]) -> None:
                await revocations.revoke_signing_keys(
                    kids, revoked_key_lifetime(settings.access_token_ttl)
                )

            key_watcher = asyncio.create_task(
                key_folder.watch(publish_removed=publish_removed), name="key-folder-watch"
            )
            # Read before the first request when the API answers, then in the background;
            # until a first read succeeds no minimum applies (docs/app-versions.md).
            async with (
                manifests.kept_fresh(
                    lambda: fetch_manifest(manifest_client, settings.app_versions_url)
                ),
                running(  # expired codes, sign-ins and tokens; deleted accounts' tombstones
                    sweep_forever(db, tombstone_seconds=entry_lifetime(settings.access_token_ttl)),
                    "oauth-sweep",
                ),
                running(deliver_forever(db, settings.smtp), "mail-delivery"),
                running(
                    relay_forever(db, settings.redis_url, settings.redis_key_prefix),
                    "account-deletion-relay",
                ),
            ):
                app.state.update(
                    settings=settings,
                    schema=SchemaCheck(db, MIGRATIONS),
                    signing_keys=keys,
                    db=db,
                    session_ender=SessionEnder(db, revocations, settings.access_token_ttl),
                    password_hasher=hasher,
                    password_policy=password_policy,
                    ratelimit=ratelimit,
                    revocations=revocations,
                    login_anomalies=login_anomalies,
                    account_work=account_work,
                    verifier=AccessTokenVerifier(
                        LocalKeys(keys),
                        issuer=settings.issuer,
                        audience=settings.audience,
                        max_lifetime=settings.access_token_ttl,
                    ),
                )
                yield
        finally:
            if key_watcher is not None:
                key_watcher.cancel()
                await asyncio.gather(key_watcher, return_exceptions=True)
            if revocation_resync is not None:
                revocation_resync.cancel()
                await asyncio.gather(revocation_resync, return_exceptions=True)
            await account_work.aclose()
            await manifest_client.aclose()
            await login_anomalies.aclose()
            await detector_db.close()
            await revocations.aclose()
            await ratelimit.close()
            hasher.close()
            await password_policy.aclose()
            await db.close()

    def provide_password_hasher(state: State) -> PasswordHasher:
        hasher: PasswordHasher = state.password_hasher
        return hasher

    def provide_password_policy(state: State) -> PasswordPolicy:
        policy: PasswordPolicy = state.password_policy
        return policy

    def provide_database(state: State) -> Database:
        db: Database = state.db
        return db

    def provide_session_ender(state: State) -> SessionEnder:
        ender: SessionEnder = state.session_ender
        return ender

    app = Litestar(
        route_handlers=[
            healthz,
            readyz,
            UserController,
            SessionController,
            AccountController,
            SignedInAccountController,
            OAuthController,
            DiscoveryController,
            PagesController,
            AccountPagesController,
        ],
        # No dependency holds a database connection (Litestar would not clean up one whose
        # sibling raised): use cases take connections in ``async with`` blocks.
        dependencies={
            "password_hasher": Provide(provide_password_hasher, sync_to_thread=False),
            "password_policy": Provide(provide_password_policy, sync_to_thread=False),
            "db": Provide(provide_database, sync_to_thread=False),
            "ender": Provide(provide_session_ender, sync_to_thread=False),
        },
        # Before the body is read, any rate limit or password hash (docs/app-versions.md).
        middleware=[
            AppVersionPolicy(
                manifests, exempt_routes=PAGE_ROUTES, lenient_routes=STANDARD_CLIENT_ROUTES
            )
        ],
        before_request=first_answer(
            answer_options,
            strict_json_bodies(form_paths=("/oauth2/", "/signin", "/device", "/account/")),
        ),
        exception_handlers={
            **exception_handlers,
            OAuthError: on_oauth_error,
            UnreadablePageRequestError: on_bad_page_request,
        },
        lifespan=[lifespan],
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,  # bulwark.common.logging owns the root logger
        openapi_config=(
            document.openapi_config("Bulwark auth", "0.1.0")
            if settings.environment == "development"
            else None
        ),
    )
    return RequestContextMiddleware(cast("ASGIApp", app), settings.trusted_proxies, settings.http)


#: Settings the published OpenAPI document is built with: development's (where ``/schema`` is
#: served). The database is never connected: no lifespan runs.
DOCUMENT_ENV = {
    "BULWARK_ENV": "development",
    "DATABASE_URL": "postgresql://document@localhost/unused",
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document served at ``/schema`` in development and published as
    ``docs/openapi/auth.json`` (`bulwark.common.openapi.document.build`)."""
    app = create_app(from_env(DOCUMENT_ENV))
    assert isinstance(app, RequestContextMiddleware)  # noqa: S101  # create_app's wrapper
    return document.build(cast("Litestar", app.app))
