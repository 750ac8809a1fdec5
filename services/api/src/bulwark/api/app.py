"""The resource API's application factory."""

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import redis.asyncio
from litestar import Controller, Litestar, Router, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from bulwark.api.account_deletions.consumer import DeletionConsumer
from bulwark.api.account_deletions.service import erase_user
from bulwark.api.anomalies.checks import ApiAnomalies
from bulwark.api.app_versions import queries as app_version_queries
from bulwark.api.app_versions.routes import app_versions
from bulwark.api.caller import caller, check_verified_email_operations
from bulwark.api.idempotency import idempotency_key, sweep_forever
from bulwark.api.notes.routes import NoteController
from bulwark.api.replica import NotesDatabases
from bulwark.api.settings import ApiSettings, from_env
from bulwark.api.uploads.local_storage import OBJECTS_PATH, UploadObjectController
from bulwark.api.uploads.routes import UploadController
from bulwark.api.uploads.service import UploadService, open_storage, sweep_abandoned_forever
from bulwark.api.uploads.storage import ObjectStorage
from bulwark.api.write_positions import WritePositions
from bulwark.common.access_tokens import AccessTokenClaims, AccessTokenVerifier, JwksCache
from bulwark.common.allow import answer_options, first_answer
from bulwark.common.app_versions.manifest import ManifestCache
from bulwark.common.app_versions.policy import AppVersionPolicy
from bulwark.common.background import running
from bulwark.common.db import Database, open_database
from bulwark.common.health import healthz
from bulwark.common.http import ASGIApp, RequestContextMiddleware
from bulwark.common.migrations import SchemaCheck
from bulwark.common.openapi import document
from bulwark.common.problems import ServiceUnavailable, exception_handlers
from bulwark.common.ratelimit_client import RateLimitClient
from bulwark.common.redis_clients import bounded_redis
from bulwark.common.request_bodies import strict_json_bodies
from bulwark.common.revocations import SessionRevocations
from bulwark.common.schemas import Schema

MIGRATIONS = Path(__file__).parent / "migrations"
#: Database connections of the anomaly detectors, apart from the request pool.
DETECTOR_CONNECTIONS = 2
#: Largest request body accepted, in bytes (a note's body is at most 10,000 characters).
MAX_BODY_BYTES = 64 * 1024


class Me(Schema, frozen=True):
    """``GET /v1/me``: who the token says the caller is."""

    id: str
    session_id: str
    scope: str


@get("/readyz", operation_id="readyz", include_in_schema=False)
async def readyz(state: State) -> dict[str, str]:
    """Readiness: the database answers, its schema is current (``bulwark-api migrate`` has
    run) and the JWKS is cached or fetchable (503 otherwise), each within its own deadline."""
    await state.db.ensure_ready()
    await state.schema.ensure_current()
    if not await state.jwks.ready():
        raise ServiceUnavailable("The token keys are not available.")
    return {"status": "ready"}


@get("/me", operation_id="getMe")
async def me(caller: NamedDependency[AccessTokenClaims]) -> Me:
    """The caller's identity (the API knows users only by ``sub``)."""
    return Me(id=caller.sub, session_id=caller.sid, scope=caller.scope)


def provide_databases(state: State) -> NotesDatabases:
    """The request pools (the primary, and the read replica when configured); routes take
    connections from them for one statement at a time."""
    databases: NotesDatabases = state.databases
    return databases


def upload_routes(backend: str) -> list[type[Controller]]:
    """The uploads routes: none when uploads are off; with the local backend, also the
    routes of its pre-signed URLs, which the API serves itself."""
    if backend == "off":
        return []
    return [UploadController, *([UploadObjectController] if backend == "local" else [])]


def provide_uploads(state: State) -> UploadService:
    """The uploads use cases (storage and databases opened in the lifespan)."""
    uploads: UploadService = state.uploads
    return uploads


async def open_replica(settings: ApiSettings) -> tuple[Database | None, WritePositions | None]:
    """The read replica's pool (the primary's size and timeouts) and the write positions
    kept for read-your-writes, or ``(None, None)`` without ``DATABASE_READ_URL``. Connects
    nothing: a replica that is down at start-up only sends reads to the primary."""
    if settings.database_read_url is None:
        return None, None
    replica = await open_database(
        settings.database_read_url,
        name="replica",
        max_size=settings.database_pool_size,
        timeout_seconds=settings.database_timeout,
        pool_mode=settings.database_pool_mode,
    )
    positions = WritePositions(
        settings.redis_url,
        key_prefix=settings.redis_key_prefix,
        timeout_seconds=settings.redis_timeout,
        ttl_seconds=settings.read_your_writes_seconds,
    )
    return replica, positions


#: Longest wait of one read of the account-deletion stream, in seconds.
DELETIONS_BLOCK_SECONDS = 5.0


def deletion_consumer(
    settings: ApiSettings, db: Database, storage: ObjectStorage | None
) -> tuple[DeletionConsumer, redis.asyncio.Redis]:
    """The account-deletion consumer of this process and its own Redis client (whose socket
    timeout outlasts the blocking read); nothing is connected yet."""
    client = bounded_redis(
        settings.redis_url,
        max_connections=1,
        timeout_seconds=DELETIONS_BLOCK_SECONDS + settings.redis_timeout,
    )
    consumer = DeletionConsumer(
        client,
        lambda user_id: erase_user(db, storage, user_id),
        prefix=settings.redis_key_prefix,
        claim_idle_seconds=settings.account_deletion_claim_seconds,
        block_seconds=DELETIONS_BLOCK_SECONDS,
        timeout_seconds=settings.redis_timeout,
    )
    return consumer, client


def create_app(settings: ApiSettings) -> ASGIApp:
    """The resource API as an ASGI app; pools and clients open in its lifespan.

    Raises:
        SettingsError: ``REQUIRE_VERIFIED_EMAIL`` names an operation the app does not
            authenticate (`check_verified_email_operations`).
    """
    manifests = ManifestCache(
        source="database",
        refresh_seconds=settings.app_versions_cache_seconds,
        timeout_seconds=settings.database_timeout,
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # First: the local backend may refuse to start (its folder), before anything is open.
        storage = open_storage(settings.uploads, f"http://{settings.host}:{settings.port}")
        db = await open_database(
            settings.database_url,
            max_size=settings.database_pool_size,
            timeout_seconds=settings.database_timeout,
            pool_mode=settings.database_pool_mode,
        )
        # Cached for the auth's Cache-Control max-age, at least jwks_min_refresh seconds; an
        # unknown kid refetches at most once per jwks_min_refresh (docs/keys.md).
        jwks = JwksCache(
            settings.jwks_url,
            min_ttl=settings.jwks_min_refresh,
            refetch_cooldown=settings.jwks_min_refresh,
        )
        ratelimit = RateLimitClient(
            settings.ratelimit_target, "bulwark-api", timeout_seconds=settings.ratelimit_timeout
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
        anomalies = ApiAnomalies(detector_db, settings)
        replica, positions = await open_replica(settings)
        databases = NotesDatabases(
            db, replica, positions, max_lag_seconds=settings.replica_max_lag_seconds
        )
        uploads = (
            None
            if storage is None
            else UploadService(
                databases,
                storage,
                settings.uploads,
                queue_timeout_seconds=settings.http.queue_timeout,
            )
        )
        deletions, deletions_redis = deletion_consumer(settings, db, storage)
        try:
            databases.start()
            # The manifest is read before the first request, then every
            # APP_VERSIONS_CACHE_SECONDS in the background (docs/app-versions.md).
            async with (
                manifests.kept_fresh(lambda: app_version_queries.load_manifest(db)),
                running(sweep_forever(db), "idempotency-sweep"),  # expired Idempotency-Keys
                # Deleted accounts' data (docs/account-deletion.md).
                running(deletions.run_forever(), "account-deletions"),
                # Uploads never completed, and their objects.
                running(sweep_abandoned_forever(uploads), "upload-sweep")
                if uploads is not None
                else contextlib.nullcontext(),
            ):
                app.state.update(
                    settings=settings,
                    schema=SchemaCheck(db, MIGRATIONS),
                    db=db,
                    databases=databases,
                    anomalies=anomalies,
                    jwks=jwks,
                    upload_storage=storage,
                    uploads=uploads,
                    app_versions=manifests,
                    ratelimit=ratelimit,
                    revocations=revocations,
                    verifier=AccessTokenVerifier(
                        jwks,
                        issuer=settings.issuer,
                        audience=settings.audience,
                        max_lifetime=settings.access_token_ttl,
                    ),
                )
                yield
        finally:
            if storage is not None:
                await storage.aclose()
            await databases.aclose()
            await anomalies.aclose()
            await detector_db.close()
            if positions is not None:
                await positions.aclose()
            if replica is not None:
                await replica.close()
            await ratelimit.close()
            await revocations.aclose()
            await deletions_redis.aclose()
            await jwks.aclose()
            await db.close()

    v1 = Router(
        path="/v1",
        route_handlers=[me, NoteController, app_versions, *upload_routes(settings.uploads.backend)],
        # No dependency holds a database connection: routes take one in an ``async with``
        # block after ``caller`` has authenticated and rate-limited the request.
        dependencies={
            "caller": Provide(caller),
            "idempotency_key": Provide(idempotency_key),
            "db": Provide(provide_databases, sync_to_thread=False),
            "uploads": Provide(provide_uploads, sync_to_thread=False),
        },
    )
    app = Litestar(
        route_handlers=[healthz, readyz, v1],
        # Before the body is read and the caller authenticated (docs/app-versions.md). The
        # local backend's object URLs stand in for S3's, which no app version check guards.
        middleware=[
            AppVersionPolicy(
                manifests, exempt_routes={"/v1/app-versions", f"/v1{OBJECTS_PATH}/{{token}}"}
            )
        ],
        before_request=first_answer(answer_options, strict_json_bodies()),
        exception_handlers=exception_handlers,
        lifespan=[lifespan],
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,  # bulwark.common.logging owns the root logger
        openapi_config=(
            document.openapi_config("Bulwark API", "0.1.0")
            if settings.environment == "development"
            else None
        ),
    )
    check_verified_email_operations(app, settings)
    return RequestContextMiddleware(cast("ASGIApp", app), settings.trusted_proxies, settings.http)


#: Settings the published OpenAPI document is built with: development's (where ``/schema`` is
#: served). The database is never connected: no lifespan runs.
DOCUMENT_ENV = {
    "BULWARK_ENV": "development",
    "DATABASE_URL": "postgresql://document@localhost/unused",
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document served at ``/schema`` in development and published as
    ``docs/openapi/api.json`` (`bulwark.common.openapi.document.build`)."""
    app = create_app(from_env(DOCUMENT_ENV))
    assert isinstance(app, RequestContextMiddleware)  # noqa: S101  # create_app's wrapper
    return document.build(cast("Litestar", app.app))
