"""The registered OAuth clients (RFC 6749 §2), read from ``OAUTH_CLIENTS``.

Every client is public (RFC 6749 §2.1: native and browser apps cannot keep a secret), so it
authenticates with nothing (``token_endpoint_auth_method: none``) and proves possession of
its grants instead: PKCE for codes, the device code, the refresh token. A client may use
only the grant types and scopes it is registered with, and only its registered redirect URIs,
compared exactly (RFC 9700 §4.1.1). The mobile app (``CLIENT_ID``) is always registered,
with the refresh token grant (its first tokens come from ``/v1/auth/login``).

``OAUTH_CLIENTS`` is a JSON list::

    [{"client_id": "tv-app", "name": "Living-room TV", "scopes": ["api"],
      "grant_types": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"]},
     {"client_id": "web", "name": "Web dashboard", "scopes": ["api"],
      "grant_types": ["authorization_code", "refresh_token"],
      "redirect_uris": ["https://app.example.com/callback"]}]
"""

import ipaddress
import re
from collections.abc import Iterable
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from bulwark.auth.tokens import DEFAULT_SCOPE
from bulwark.common.settings import SettingsError

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
GrantType = Literal[
    "authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"
]
#: A scope token (RFC 6749 §3.3: ``1*( %x21 / %x23-5B / %x5D-7E )``), at most 64 characters.
ScopeToken = Annotated[str, msgspec.Meta(pattern=r"^[\x21\x23-\x5B\x5D-\x7E]{1,64}$")]
ClientId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
#: A private-use URI scheme of a native app: a reversed domain name (RFC 8252 §7.1).
_PRIVATE_USE_SCHEME = re.compile(r"^[a-z][a-z0-9+-]*(\.[a-z0-9+-]+)+$")


class OAuthClient(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One registered public client: its id, the ``name`` shown on the consent pages, the
    grant types and scopes it may use, and its redirect URIs (authorization code only)."""

    client_id: ClientId
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    grant_types: Annotated[list[GrantType], msgspec.Meta(min_length=1)]
    scopes: Annotated[list[ScopeToken], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: [DEFAULT_SCOPE]
    )
    redirect_uris: list[Annotated[str, msgspec.Meta(max_length=512)]] = msgspec.field(
        default_factory=list
    )

    def allows_scope(self, scope: str) -> bool:
        """Whether every token of ``scope`` (space-separated) is one of this client's."""
        return set(scope.split(" ")) <= set(self.scopes)

    @property
    def default_scope(self) -> str:
        """The scope granted when a request names none (RFC 6749 §3.3): all of the client's."""
        return " ".join(self.scopes)


def _redirect_uri_problem(uri: str) -> str | None:
    """Why ``uri`` cannot be registered (RFC 8252 §7, RFC 9700 §4.1), or None."""
    parts = urlsplit(uri)
    if parts.fragment or "#" in uri:
        return "must not have a fragment (RFC 6749 §3.1.2)"
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname:
        try:
            if ipaddress.ip_address(parts.hostname).is_loopback:
                return None
        except ValueError:
            pass
        return "may use http only on a loopback IP address (RFC 8252 §7.3)"
    if _PRIVATE_USE_SCHEME.match(parts.scheme):
        return None
    return "must be https, http on a loopback IP, or a reversed-domain scheme (RFC 8252 §7)"


def parse_clients(raw: str, *, mobile_client_id: str) -> tuple[OAuthClient, ...]:
    """The clients of ``OAUTH_CLIENTS`` (``raw``, a JSON list; empty: none), with the mobile
    app ``mobile_client_id`` added when the list does not name it.

    Raises:
        SettingsError: not a JSON list of clients, a client id given twice, a redirect URI
            that is not absolute https, loopback http or a private-use scheme, a client with
            the authorization code grant and no redirect URI, or one without the refresh
            token grant (every session it starts is a refresh-token family).
    """
    try:
        clients = msgspec.json.decode(raw or "[]", type=list[OAuthClient])
    except msgspec.ValidationError as invalid:
        raise SettingsError(f"OAUTH_CLIENTS: {invalid}") from None
    except msgspec.DecodeError:
        raise SettingsError("OAUTH_CLIENTS must be a JSON list") from None
    ids = [client.client_id for client in clients]
    if len(set(ids)) != len(ids):
        raise SettingsError("OAUTH_CLIENTS names a client_id twice")
    for client in clients:
        for uri in client.redirect_uris:
            problem = _redirect_uri_problem(uri)
            if problem:
                raise SettingsError(f"OAUTH_CLIENTS: {client.client_id}'s {uri!r} {problem}")
        if "authorization_code" in client.grant_types and not client.redirect_uris:
            raise SettingsError(f"OAUTH_CLIENTS: {client.client_id} needs a redirect URI")
        if "refresh_token" not in client.grant_types:
            # Every session is a refresh-token family: its tokens include a refresh token.
            raise SettingsError(f"OAUTH_CLIENTS: {client.client_id} needs refresh_token")
    if mobile_client_id not in ids:
        mobile = OAuthClient(
            client_id=mobile_client_id, name="Mobile app", grant_types=["refresh_token"]
        )
        clients.append(mobile)
    return tuple(clients)


def supported_scopes(clients: Iterable[OAuthClient]) -> list[str]:
    """Every scope some client may ask for, sorted (RFC 8414 ``scopes_supported``)."""
    return sorted({scope for client in clients for scope in client.scopes})
