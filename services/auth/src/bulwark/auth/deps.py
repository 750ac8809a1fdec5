"""Request-boundary dependencies: the authenticated caller and the client context."""

import uuid
from collections.abc import Mapping
from typing import Any, cast

import asyncpg
from litestar import Request
from litestar.datastructures import State

from bulwark.auth.sessions import queries as session_queries
from bulwark.auth.sessions.rules import ClientContext
from bulwark.common import http
from bulwark.common.access_tokens import (
    AccessTokenClaims,
    AccessTokenVerifier,
    InvalidAccessToken,
    bearer_token,
)
from bulwark.common.logging import get_logger
from bulwark.common.problems import Unauthorized

Connection = asyncpg.Connection
_log = get_logger(__name__)


async def authenticated(request: Request[Any, Any, Any], state: State) -> AccessTokenClaims:
    """The verified claims of the caller whose session (``sid``) is still live.

    The session is checked in Postgres (one statement on a pooled connection, outside the
    request's transaction, so handlers that end sessions can commit before they answer).

    Raises:
        Unauthorized: invalid token, or its session was logged out or revoked.
    """
    verifier: AccessTokenVerifier = state.verifier
    try:
        claims = await verifier.verify(bearer_token(request))
        family_id = uuid.UUID(claims.sid)
    except (InvalidAccessToken, ValueError) as exc:
        _log.info("access_token_rejected", reason=str(exc))
        raise Unauthorized("The access token is invalid or expired.") from None
    if not await session_queries.family_is_live(state.pool, family_id, uuid.UUID(claims.sub)):
        raise Unauthorized("The session has ended.")
    request.scope["state"]["user_id"] = claims.sub
    return claims


def client_context(request: Request[Any, Any, Any]) -> ClientContext:
    """The caller's IP, device id and platform, sanitised (see ``bulwark.common.http``)."""
    scope = cast("Mapping[str, Any]", request.scope)
    return ClientContext(
        ip=http.client_ip(scope), device_id=http.device_id(scope), platform=http.platform(scope)
    )
