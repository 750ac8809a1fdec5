"""OAuth 2.0 endpoints: token (RFC 6749 §6), revocation (RFC 7009), JWKS (RFC 7517) and
authorization server metadata (RFC 8414).

Errors here are RFC 6749 §5.2 JSON (``{"error": "invalid_grant", ...}``), not problem+json,
because OAuth client libraries parse that shape.
"""

import base64
import json
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency

from bulwark.auth.deps import client_context
from bulwark.auth.device import rules as device
from bulwark.auth.oauth import grants, revocation
from bulwark.auth.oauth.client_authentication import client_authentication
from bulwark.auth.oauth.clients import DEVICE_CODE_GRANT, supported_scopes
from bulwark.auth.oauth.errors import OAuthError
from bulwark.auth.oauth.schemas import (
    MAX_FORM_FIELDS,
    MAX_FORM_NAME_LENGTH,
    MAX_FORM_VALUE_LENGTH,
    DeviceAuthorizationForm,
    JwkSet,
    RevokeForm,
    ServerMetadata,
    TokenForm,
)
from bulwark.auth.sessions.ending import SessionEnder
from bulwark.auth.settings import AuthSettings
from bulwark.auth.tokens import TokenResponse
from bulwark.common import rate_limits
from bulwark.common.db import Database
from bulwark.common.request_bodies import RefusedPairsError, urlencoded_pairs
from bulwark.common.schemas import has_control_characters

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_FORM = "application/x-www-form-urlencoded"


def on_oauth_error(_request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, str]]:
    """Render an ``OAuthError`` as RFC 6749 §5.2 JSON with ``Cache-Control: no-store`` and
    the error's own headers (a 401's ``WWW-Authenticate``)."""
    assert isinstance(exc, OAuthError)  # noqa: S101  # registered for OAuthError only
    return Response(
        {"error": exc.error, "error_description": exc.description},
        status_code=exc.status,
        headers={**NO_STORE, **exc.headers},
    )


def parse_form(body: bytes) -> dict[str, str]:
    """The parameters of an ``application/x-www-form-urlencoded`` body (UTF-8 after
    percent-decoding, RFC 6749 Appendix B), each present at most once (RFC 6749 §3.2); one
    sent without a value is left out, as if omitted (RFC 6749 §3.1).

    Raises:
        OAuthError: ``invalid_request`` when the body is not such a form (raw bytes outside
            ASCII, percent-escapes that are not UTF-8), has more than `MAX_FORM_FIELDS`
            fields, a name or value too long, an empty name, a control character, or a
            parameter given twice.
    """
    try:
        params = urlencoded_pairs(
            body,
            max_fields=MAX_FORM_FIELDS,
            max_name=MAX_FORM_NAME_LENGTH,
            max_value=MAX_FORM_VALUE_LENGTH,
        )
    except RefusedPairsError as refused:
        raise OAuthError("invalid_request", f"The form: {refused}.") from None
    for name, value in params.items():
        if not name:
            raise OAuthError("invalid_request", "A parameter has no name.")
        if has_control_characters(name) or has_control_characters(value):
            raise OAuthError("invalid_request", "Parameters must not hold control characters.")
    return {name: value for name, value in params.items() if value}


async def _form(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The form parameters (`parse_form`) of a form-encoded request in UTF-8.

    Raises:
        OAuthError: ``invalid_request`` when the body is not such a form.
    """
    media_type, media_params = request.content_type
    if media_type != _FORM or media_params.get("charset", "utf-8").lower() != "utf-8":
        raise OAuthError("invalid_request", f"The body must be {_FORM} in UTF-8.")
    return parse_form(await request.body())


def _subject(access_token: str) -> str:
    """The ``sub`` claim of an access token this service has just minted (not verified: it
    is our own, read only to name the user in the access log)."""
    payload = access_token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"])


async def _limit_per_ip(request: Request[Any, Any, State], state: State) -> None:
    """Count the call against the token endpoint's per-IP limit (429/503 when refused)."""
    await rate_limits.enforce(
        state.ratelimit,
        [[("endpoint", "token"), ("remote_address", client_context(request).ip or "unknown")]],
        fail_open=state.settings.fails_open("token"),
        request_state=request.scope["state"],
    )


class OAuthController(Controller):
    """``/oauth2``."""

    path = "/oauth2"

    @post(
        "/token",
        operation_id="token",
        status_code=200,
        response_headers=NO_STORE,
        opt={"form": TokenForm, "oauth_errors": (400, 401), "answers": (401, 429, 503)},
    )
    async def token(
        self,
        request: Request[Any, Any, State],
        state: State,
        db: NamedDependency[Database],
        ender: NamedDependency[SessionEnder],
    ) -> TokenResponse:
        """Token endpoint (RFC 6749 §3.2): the grants ``refresh_token`` (rotation, reuse
        detection per RFC 9700 §4.14, a grace window for benign retries and device binding;
        see ``sessions.rules.rotate``), ``authorization_code`` with PKCE (RFC 7636) and
        ``urn:ietf:params:oauth:grant-type:device_code`` (RFC 8628 §3.4). A session ended
        here is listed as revoked for the API before the answer."""
        context = client_context(request)
        await _limit_per_ip(request, state)
        params = await _form(request)
        grant_type = params.get("grant_type")
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required.")
        if grant_type not in grants.EXCHANGES:  # a grant type name
            raise OAuthError("unsupported_grant_type", f"{grant_type} is not supported.")
        authorization = request.headers.getall("authorization", [])
        client = grants.client_for(authorization, params, state.settings, grant_type)
        exchange = grants.Exchange(
            db=db,
            settings=state.settings,
            keys=state.signing_keys,
            ender=ender,
            params=params,
            client=client,
            context=context,
        )
        tokens = await grants.EXCHANGES[grant_type](exchange)
        request.scope["state"]["user_id"] = _subject(tokens.access_token)  # for the access line
        return tokens

    @post(
        "/device_authorization",
        operation_id="deviceAuthorization",
        status_code=200,
        response_headers=NO_STORE,
        opt={
            "form": DeviceAuthorizationForm,
            "oauth_errors": (400, 401),
            "answers": (401, 429, 503),
        },
    )
    async def device_authorization(
        self, request: Request[Any, Any, State], state: State, db: NamedDependency[Database]
    ) -> device.DeviceAuthorization:
        """Device authorization endpoint (RFC 8628 §3.1-3.2): a device code to poll the
        token endpoint with, and the user code its user approves at ``verification_uri``.
        Counted against the token endpoint's per-IP limit."""
        await _limit_per_ip(request, state)
        params = await _form(request)
        authorization = request.headers.getall("authorization", [])
        client = grants.client_for(authorization, params, state.settings, DEVICE_CODE_GRANT)
        return await device.start(
            db, state.settings, client, grants.requested_scope(params, client)
        )

    @post(
        "/revoke",
        operation_id="revoke",
        status_code=200,
        response_headers=NO_STORE,
        opt={"form": RevokeForm, "oauth_errors": (400, 401), "answers": (401, 429, 503)},
        media_type="text/plain",
    )
    async def revoke(
        self, request: Request[Any, Any, State], state: State, ender: NamedDependency[SessionEnder]
    ) -> Response[bytes]:
        """Revoke a refresh token or an access token (RFC 7009), ending its session: the
        whole grant, as §2.1 allows (see `bulwark.auth.oauth.revocation`); 200 even for
        unknown, expired or forged tokens (§2.2). ``token_type_hint`` is only a hint.

        The session's access tokens stop working at the API before the answer (RFC 7009
        §2.1: access tokens of the same grant SHOULD be invalidated too). Counted against
        the token endpoint's per-IP limit, before any database work."""
        await _limit_per_ip(request, state)
        params = await _form(request)
        client = client_authentication(
            request.headers.getall("authorization", []), params, state.settings
        )
        token = params.get("token")
        if not token:
            raise OAuthError("invalid_request", "token is required.")
        await revocation.revoke_token(
            token,
            client_id=client.client_id,
            ender=ender,
            verifier=state.verifier,
            ip=client_context(request).ip,
        )
        return Response(b"", media_type="text/plain")


class DiscoveryController(Controller):
    """``/.well-known``: public keys and server metadata."""

    path = "/.well-known"

    @get("/jwks.json", operation_id="jwks", media_type="application/jwk-set+json")
    async def jwks(self, state: State) -> Response[JwkSet]:
        """The public signing keys (RFC 7517), cacheable for ``JWKS_MAX_AGE_SECONDS`` (the
        wait the key rotation rules are built on; see docs/keys.md)."""
        return Response(
            state.signing_keys.jwks(),
            media_type="application/jwk-set+json",
            headers={"Cache-Control": f"public, max-age={state.settings.jwks_max_age}"},
        )

    @get("/oauth-authorization-server", operation_id="metadata")
    async def metadata(self, state: State) -> ServerMetadata:
        """Authorization server metadata (RFC 8414 §2)."""
        settings: AuthSettings = state.settings
        issuer = settings.issuer
        grant_types = {grant for client in settings.oauth_clients for grant in client.grant_types}
        return ServerMetadata(
            issuer=issuer,
            authorization_endpoint=f"{issuer}/oauth2/authorize",
            token_endpoint=f"{issuer}/oauth2/token",
            device_authorization_endpoint=f"{issuer}/oauth2/device_authorization",
            revocation_endpoint=f"{issuer}/oauth2/revoke",
            jwks_uri=f"{issuer}/.well-known/jwks.json",
            scopes_supported=supported_scopes(settings.oauth_clients),
            response_types_supported=["code"],
            response_modes_supported=["query"],
            grant_types_supported=sorted(grant_types),
            token_endpoint_auth_methods_supported=["none"],
            revocation_endpoint_auth_methods_supported=["none"],
            code_challenge_methods_supported=["S256"],
            authorization_response_iss_parameter_supported=True,
        )
