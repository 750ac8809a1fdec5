"""The resource API's application factory."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

from litestar import Litestar, Router, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from bulwark.api.anomalies.checks import ApiAnomalies
from bulwark.api.caller import caller
from bulwark.api.notes.routes import NoteController
from bulwark.api.replica import NotesDatabases
from bulwark.api.settings import ApiSettings, from_env
from bulwark.api.write_positions import WritePositions
from bulwark.common.access_tokens import AccessTokenClaims, AccessTokenVerifier, JwksCache
from bulwark.common.allow import answer_options, first_answer
from bulwark.common.db import Database, open_database
from bulwark.common.health import healthz
from bulwark.common.http import ASGIApp, RequestContextMiddleware
from bulwark.common.migrations import SchemaCheck
from bulwark.common.openapi import document
from bulwark.common.problems import ServiceUnavailable, exception_handlers
from bulwark.common.ratelimit_client import RateLimitClient
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


def create_app(settings: ApiSettings) -> ASGIApp:
    """The resource API as an ASGI app; pools and clients open in its lifespan."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
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
        try:
            databases.start()
            app.state.update(
                settings=settings,
                schema=SchemaCheck(db, MIGRATIONS),
                db=db,
                databases=databases,
                anomalies=anomalies,
                jwks=jwks,
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
            await databases.aclose()
            await anomalies.aclose()
            await detector_db.close()
            if positions is not None:
                await positions.aclose()
            if replica is not None:
                await replica.close()
            await ratelimit.close()
            await revocations.aclose()
            await jwks.aclose()
            await db.close()

    v1 = Router(
        path="/v1",
        route_handlers=[me, NoteController],
        # No dependency holds a database connection: routes take one in an ``async with``
        # block after ``caller`` has authenticated and rate-limited the request.
        dependencies={
            "caller": Provide(caller),
            "db": Provide(provide_databases, sync_to_thread=False),
        },
    )
    app = Litestar(
        route_handlers=[healthz, readyz, v1],
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
