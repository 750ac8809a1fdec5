"""The authenticated caller of the resource API, and the per-request rate limit.

Every ``/v1`` route depends on ``caller``: the bearer token is verified against the auth
service's JWKS, and one Redis ``EXISTS`` asks whether its session (``sid``) has ended
(logout, refresh reuse, ...; see ``bulwark.common.revocations``; when Redis cannot answer,
``REVOCATION_FAILURE_MODE`` decides). Then one rate-limit call counts the request per client
IP and, for a live session, per user (``remote_address`` and ``user_id`` descriptors). A
request with a bad or ended token is still counted per IP, so a flood of forged or stolen
tokens is limited too, but never against the user it names. Each request of a live session
is also counted, in the background, by the burst detector (``bulwark.api.anomalies``).
Last, the token's ``scope`` must include `REQUIRED_SCOPE`: a client granted other scopes
only (or a refresh that narrowed its access token to them) reaches none of the API.
"""

from collections.abc import Mapping
from typing import Any, cast

from litestar import Request
from litestar.datastructures import State

from bulwark.api.settings import ApiSettings
from bulwark.common import http, rate_limits, revocations
from bulwark.common.access_tokens import (
    AccessTokenClaims,
    AccessTokenVerifier,
    InvalidAccessToken,
    JwksUnavailable,
    bearer_token,
)
from bulwark.common.logging import get_logger
from bulwark.common.problems import InsufficientScope, ServiceUnavailable, Unauthorized

_log = get_logger(__name__)
#: The scope an access token needs for any ``/v1`` route of the API (RFC 6749 §3.3).
REQUIRED_SCOPE = "api"


async def caller(request: Request[Any, Any, Any], state: State) -> AccessTokenClaims:
    """The verified access-token claims of the caller.

    Raises:
        Unauthorized: missing, malformed, forged, expired or foreign token, or its session
            has ended (401).
        InsufficientScope: the token's scope lacks `REQUIRED_SCOPE` (403, RFC 6750 §3.1).
        TooManyRequests: the IP or the user is over its limit (429).
        ServiceUnavailable: the JWKS cannot be fetched and none is cached, or the
            revocation check cannot be made and ``REVOCATION_FAILURE_MODE`` is ``deny`` (503).
    """
    settings: ApiSettings = state.settings
    verifier: AccessTokenVerifier = state.verifier
    ip = http.client_ip(cast("Mapping[str, Any]", request.scope)) or "unknown"
    descriptors = [[("remote_address", ip)]]
    claims: AccessTokenClaims | None = None
    rejection: Unauthorized | None = None
    try:
        claims = await verifier.verify(bearer_token(request))
    except Unauthorized as unauthorized:
        rejection = unauthorized
    except InvalidAccessToken as invalid:
        _log.info("access_token_rejected", reason=str(invalid))
        rejection = Unauthorized("The access token is invalid or expired.")
    except JwksUnavailable:
        raise ServiceUnavailable("Token keys are unavailable; retry shortly.") from None
    if claims is not None:
        try:
            await revocations.ensure_session_live(
                state.revocations,
                claims.sid,
                kid=claims.kid,
                fail_open=settings.revocation_failure_mode == "allow",
            )
        except Unauthorized as ended:
            # A token of an ended session is a stranger's: counted per IP only, so a stolen
            # token can neither spend its victim's limit nor feed the victim's burst detector.
            claims, rejection = None, ended
    if claims is not None:
        descriptors.append([("user_id", claims.sub)])
        request.scope["state"]["user_id"] = claims.sub
        # Counted for the burst detector whatever the answer (429 included); never blocks.
        state.anomalies.observe_request(claims.sub, ip)
    await rate_limits.enforce(
        state.ratelimit,
        descriptors,
        fail_open=settings.fails_open("v1"),
        request_state=request.scope["state"],
    )
    if claims is None:
        raise rejection or Unauthorized()
    if REQUIRED_SCOPE not in claims.scope.split(" "):
        raise InsufficientScope(REQUIRED_SCOPE)
    return claims
