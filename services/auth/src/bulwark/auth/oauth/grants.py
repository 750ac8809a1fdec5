"""The token endpoint's grants (RFC 6749 §3.2): which client asks, and the exchange of a
refresh token (§6), an authorization code with PKCE (§4.1.3, RFC 7636 §4.5) or a device
code (RFC 8628 §3.4-3.5) for tokens.

Each exchange commits its transaction whatever the outcome, since a refusal can be part of
the answer (a reuse or a replayed code ends a session, a poll is recorded), and lists a
session it ended as revoked for the API before raising.
"""

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from bulwark.auth.authorization import rules as authorization
from bulwark.auth.device import rules as device
from bulwark.auth.keys import SigningKeys
from bulwark.auth.oauth.client_authentication import client_authentication
from bulwark.auth.oauth.clients import DEVICE_CODE_GRANT, OAuthClient
from bulwark.auth.oauth.errors import OAuthError
from bulwark.auth.sessions import rules
from bulwark.auth.sessions.ending import SessionEnder
from bulwark.auth.sessions.rules import ClientContext
from bulwark.auth.settings import AuthSettings
from bulwark.auth.tokens import TokenResponse
from bulwark.common.db import Database
from bulwark.common.logging import get_logger
from bulwark.common.metrics import count_refresh_reuse

_log = get_logger(__name__)


@dataclass(frozen=True)
class Exchange:
    """One token request: where it is served from, what it sent, who sent it."""

    db: Database
    settings: AuthSettings
    keys: SigningKeys
    ender: SessionEnder
    params: Mapping[str, str]  # the form (`bulwark.auth.oauth.routes.parse_form`)
    client: OAuthClient
    context: ClientContext


def client_for(
    authorization: Sequence[str],
    params: Mapping[str, str],
    settings: AuthSettings,
    grant_type: str,
) -> OAuthClient:
    """The registered client a request comes from (`client_authentication`: credentials of
    any kind and unknown clients are refused; a request naming none is the mobile app's,
    whose refreshes never carried one), allowed ``grant_type``.

    Raises:
        OAuthError: as `client_authentication`; ``invalid_request`` when a grant other than
            the refresh names no client (public clients name themselves: RFC 6749 §3.2.1),
            ``unauthorized_client`` for a client not registered for ``grant_type`` (§5.2).
    """
    client = client_authentication(authorization, params, settings)
    if "client_id" not in params and grant_type != "refresh_token":
        raise OAuthError("invalid_request", "client_id is required.")
    if grant_type not in client.grant_types:
        raise OAuthError("unauthorized_client", f"The client may not use {grant_type}.")
    return client


def requested_scope(params: Mapping[str, str], client: OAuthClient) -> str:
    """The scope a request asks for, the client's whole scope when it names none (RFC 6749
    §3.3).

    Raises:
        OAuthError: ``invalid_scope``: a scope the client may not ask for, or malformed.
    """
    scope = params.get("scope") or client.default_scope
    if not client.allows_scope(scope):
        raise OAuthError("invalid_scope", "The requested scope is not allowed for this client.")
    return scope


def _refresh_error(refusal: rules.Refusal) -> OAuthError:
    """The RFC 6749 §5.2 error of a refused refresh: ``invalid_scope`` for the scope,
    ``invalid_grant`` otherwise, described only where the client can act on it."""
    description = refusal.description or "The refresh token is invalid."
    if refusal.reason is rules.RefreshRejection.INVALID_SCOPE:
        return OAuthError("invalid_scope", description)
    return OAuthError("invalid_grant", description)


async def refresh(exchange: Exchange) -> TokenResponse:
    """The refresh token grant (RFC 6749 §6); see ``sessions.rules.rotate``.

    Raises:
        OAuthError: ``invalid_request`` (no token), ``invalid_grant``, ``invalid_scope``.
        DatabaseUnavailable: the database cannot answer (503).
    """
    refresh_token = exchange.params.get("refresh_token")
    if not refresh_token:
        raise OAuthError("invalid_request", "refresh_token is required.")
    # Committed whatever the outcome: a reuse revokes the family and records the event.
    async with exchange.db.transaction() as conn:
        outcome = await rules.rotate(
            conn,
            exchange.settings,
            exchange.keys,
            refresh_token=refresh_token,
            client=exchange.context,
            client_id=exchange.client.client_id,
            scope=exchange.params.get("scope"),
        )
    if isinstance(outcome, rules.Refusal):
        if outcome.revoked_family is not None:
            await exchange.ender.publish([outcome.revoked_family])
        if outcome.reason is rules.RefreshRejection.REUSED:
            count_refresh_reuse()
        _log.info("refresh_rejected", reason=outcome.reason.value)
        raise _refresh_error(outcome)
    return outcome


async def exchange_code(exchange: Exchange) -> TokenResponse:
    """The authorization code grant (RFC 6749 §4.1.3) with PKCE (RFC 7636 §4.5); see
    ``authorization.rules.exchange``.

    Raises:
        OAuthError: ``invalid_request`` (no code), ``invalid_grant``.
        DatabaseUnavailable: the database cannot answer (503).
    """
    code = exchange.params.get("code")
    if not code:
        raise OAuthError("invalid_request", "code is required.")
    # Committed whatever the outcome: a presented code is spent, a replay ends its session.
    async with exchange.db.transaction() as conn:
        try:
            exchanged = await authorization.exchange(
                conn,
                exchange.settings,
                exchange.keys,
                code=code,
                client=exchange.client,
                redirect_uri=exchange.params.get("redirect_uri"),
                code_verifier=exchange.params.get("code_verifier"),
                context=exchange.context,
            )
        except OAuthError as refused:
            exchanged = authorization.Exchanged(refusal=refused)
    if exchanged.ended_family is not None:
        await exchange.ender.publish([exchanged.ended_family])
    if exchanged.tokens is None:
        raise exchanged.refusal or OAuthError("invalid_grant", "The authorization code is invalid.")
    return exchanged.tokens


async def exchange_device_code(exchange: Exchange) -> TokenResponse:
    """One poll with a device code (RFC 8628 §3.4-3.5); see ``device.rules.exchange``.

    Raises:
        OAuthError: ``invalid_request`` (no code), ``authorization_pending``,
            ``slow_down``, ``access_denied``, ``expired_token``, ``invalid_grant``.
        DatabaseUnavailable: the database cannot answer (503).
    """
    device_code = exchange.params.get("device_code")
    if not device_code:
        raise OAuthError("invalid_request", "device_code is required.")
    refusal: OAuthError | None = None
    async with exchange.db.transaction() as conn:
        try:
            return await device.exchange(
                conn,
                exchange.settings,
                exchange.keys,
                device_code=device_code,
                client=exchange.client,
                context=exchange.context,
            )
        except OAuthError as refused:  # committed: the poll and a raised interval count
            refusal = refused
    raise refusal


#: Each supported grant type's exchange.
EXCHANGES: Mapping[str, Callable[[Exchange], Awaitable[TokenResponse]]] = {
    "refresh_token": refresh,
    "authorization_code": exchange_code,
    DEVICE_CODE_GRANT: exchange_device_code,
}
