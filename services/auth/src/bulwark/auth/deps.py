"""Request-boundary dependencies: the authenticated caller and the client context.

None of them holds a resource once it returns (Litestar does not clean up a generator
dependency whose sibling raised): database connections are taken inside use cases.
"""

import contextlib
import uuid
from collections.abc import Mapping
from typing import Any, cast

from litestar import Request
from litestar.datastructures import State

from bulwark.auth.sessions import queries as session_queries
from bulwark.auth.sessions.rules import ClientContext
from bulwark.common import http, rate_limits
from bulwark.common.access_tokens import (
    AccessTokenClaims,
    AccessTokenVerifier,
    InvalidAccessToken,
    bearer_token,
)
from bulwark.common.db import Database
from bulwark.common.logging import get_logger
from bulwark.common.problems import Unauthorized
from bulwark.common.revocations import RevocationsUnavailable, SessionRevocations

_log = get_logger(__name__)


async def authenticated(request: Request[Any, Any, Any], state: State) -> AccessTokenClaims:
    """The verified claims of the caller whose session (``sid``) is still live.

    The cheapest refusal first: the signature and claims (no I/O), then the revoked-session
    set in Redis (one ``MGET``; skipped when Redis cannot answer), then one rate-limit call
    (``endpoint=sessions`` per client IP and, unless the set lists the session as ended, per
    user), and only then Postgres, the record (one statement on a connection taken for it
    alone). A token of an ended session, or a flood of valid ones, is refused without
    touching the database; missing, forged and ended tokens count against the IP's limit.

    Raises:
        Unauthorized: invalid token, or its session was logged out or revoked.
        TooManyRequests: the IP or the user is over its limit (429).
        DatabaseUnavailable: Postgres cannot answer (503).
    """
    verifier: AccessTokenVerifier = state.verifier
    revocations: SessionRevocations = state.revocations
    db: Database = state.db
    ip = http.client_ip(cast("Mapping[str, Any]", request.scope)) or "unknown"
    descriptors = [[("endpoint", "sessions"), ("remote_address", ip)]]
    claims: AccessTokenClaims | None = None
    rejection = Unauthorized("The access token is invalid or expired.")
    try:
        claims = await verifier.verify(bearer_token(request))
    except Unauthorized as missing:  # no bearer token at all
        rejection = missing
    except InvalidAccessToken as exc:
        _log.info("access_token_rejected", reason=str(exc))
    listed = False
    if claims is not None:
        with contextlib.suppress(RevocationsUnavailable):  # then Postgres decides below
            listed = await revocations.is_revoked(claims.sid, claims.kid)
        if not listed:  # an ended session's token counts per IP only, never against its victim
            descriptors.append([("endpoint", "sessions"), ("user_id", claims.sub)])
    # Forged and ended tokens are counted too: per IP, before any database work.
    await rate_limits.enforce(
        state.ratelimit,
        descriptors,
        fail_open=state.settings.fails_open("sessions"),
        request_state=request.scope["state"],
    )
    if claims is None:
        raise rejection
    sid, sub = uuid.UUID(claims.sid), uuid.UUID(claims.sub)
    if listed or not await session_queries.family_is_live(db, sid, sub):
        raise Unauthorized("The session has ended.")
    request.scope["state"]["user_id"] = claims.sub
    return claims


def client_context(request: Request[Any, Any, Any]) -> ClientContext:
    """The caller's IP, device id and platform, sanitised (see ``bulwark.common.http``)."""
    scope = cast("Mapping[str, Any]", request.scope)
    return ClientContext(
        ip=http.client_ip(scope), device_id=http.device_id(scope), platform=http.platform(scope)
    )
