"""The authenticated caller of the resource API, and the per-request rate limit.

Every ``/v1`` route depends on ``caller``: the bearer token is verified against the auth
service's JWKS, and one Redis ``EXISTS`` asks whether its session (``sid``) has ended
(logout, refresh reuse, ...; see ``bulwark.common.revocations``; when Redis cannot answer,
``REVOCATION_FAILURE_MODE`` decides). Then one rate-limit call counts the request per client
IP and, for a live session, per user (``remote_address`` and ``user_id`` descriptors). A
request with a bad or ended token is still counted per IP, so a flood of forged or stolen
tokens is limited too, but never against the user it names. Each request of a live session
is also counted, in the background, by the burst detector (``bulwark.api.anomalies``).
Then the token's ``scope`` must include `REQUIRED_SCOPE`: a client granted other scopes
only (or a refresh that narrowed its access token to them) reaches none of the API. Last, a
route listed in ``REQUIRE_VERIFIED_EMAIL`` (by its ``operation_id``) needs a token that says
``email_verified: true`` (docs/email-verification.md); all of it before the handler runs,
so a refused request writes nothing.
"""

from collections.abc import Mapping
from typing import Any, cast

from litestar import Litestar, Request
from litestar.datastructures import State
from litestar.routes import HTTPRoute

from bulwark.api.settings import EVERY_OPERATION, ApiSettings
from bulwark.common import http, rate_limits, revocations
from bulwark.common.access_tokens import (
    AccessTokenClaims,
    AccessTokenVerifier,
    InvalidAccessToken,
    JwksUnavailable,
    bearer_token,
)
from bulwark.common.logging import get_logger
from bulwark.common.problems import (
    EmailNotVerified,
    InsufficientScope,
    ServiceUnavailable,
    Unauthorized,
)
from bulwark.common.settings import SettingsError

_log = get_logger(__name__)
#: The scope an access token needs for any ``/v1`` route of the API (RFC 6749 §3.3).
REQUIRED_SCOPE = "api"
#: The detail of a 403 ``email_not_verified`` (docs/email-verification.md).
UNVERIFIED_DETAIL = (
    "This operation needs a verified email address: confirm the address with the link or"
    " code mailed to it, then refresh the access token (its email_verified claim) and retry."
)


async def caller(request: Request[Any, Any, Any], state: State) -> AccessTokenClaims:
    """The verified access-token claims of the caller.

    Raises:
        Unauthorized: missing, malformed, forged, expired or foreign token, or its session
            has ended (401).
        InsufficientScope: the token's scope lacks `REQUIRED_SCOPE` (403, RFC 6750 §3.1).
        EmailNotVerified: the route is in ``REQUIRE_VERIFIED_EMAIL`` and the token's
            ``email_verified`` is not true (403 ``email_not_verified``).
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
    operation_id = request.route_handler.operation_id  # a str on every route of ours
    if not claims.email_verified and settings.requires_verified_email(
        operation_id if isinstance(operation_id, str) else None
    ):
        raise EmailNotVerified(UNVERIFIED_DETAIL)
    return claims


def verifiable_operations(app: Litestar) -> frozenset[str]:
    """The operation ids of ``app``'s routes that authenticate with `caller`: the names
    ``REQUIRE_VERIFIED_EMAIL`` may list."""
    return frozenset(
        handler.operation_id
        for route in app.routes
        if isinstance(route, HTTPRoute)
        for handler, _ in route.route_handler_map.values()
        if isinstance(handler.operation_id, str)
        and "caller" in handler.parsed_fn_signature.parameters
    )


def check_verified_email_operations(app: Litestar, settings: ApiSettings) -> None:
    """Refuse a ``REQUIRE_VERIFIED_EMAIL`` naming an operation ``app`` does not authenticate
    (a typo, a route without a caller, or one of a feature that is off, such as uploads),
    so a misspelt name cannot leave a route open.

    Raises:
        SettingsError: naming the unknown ids and every valid one.
    """
    valid = verifiable_operations(app)
    unknown = sorted(settings.require_verified_email - valid - {EVERY_OPERATION})
    if unknown:
        raise SettingsError(
            f"REQUIRE_VERIFIED_EMAIL names no authenticated route: {', '.join(unknown)};"
            f" the operations are {', '.join(sorted(valid))} (or * for all)"
        )
