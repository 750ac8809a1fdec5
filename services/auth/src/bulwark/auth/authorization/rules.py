"""Rules of the authorization code grant with PKCE (RFC 6749 §4.1, RFC 7636, RFC 9700).

- The request (`check_request`): a registered client with this grant, one of its redirect
  URIs compared exactly (RFC 9700 §4.1.1), ``response_type=code``, a ``code_challenge``
  with ``code_challenge_method=S256`` (plain is refused: RFC 9700 §2.1.1), and scopes the
  client may ask for. A bad client or redirect URI is shown to the user; any other error is
  sent to the redirect URI (RFC 6749 §4.1.2.1) with ``state`` and ``iss`` (RFC 9207).
- Codes are ``bac_`` + 256 random bits, stored as SHA-256, valid at most 60 s, bound to the
  client, the redirect URI and the challenge, and exchanged once: a second exchange ends
  the session the first one started (RFC 6749 §4.1.2) and is refused.
"""

import base64
import hashlib
import re
import secrets
import uuid
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import msgspec

from bulwark.auth.authorization import queries
from bulwark.auth.keys import SigningKeys
from bulwark.auth.oauth.clients import OAuthClient
from bulwark.auth.oauth.errors import OAuthError
from bulwark.auth.security_events import SecurityEvent, record
from bulwark.auth.sessions import queries as session_queries
from bulwark.auth.sessions import rules as session_rules
from bulwark.auth.sessions.rules import ClientContext
from bulwark.auth.settings import AuthSettings
from bulwark.auth.tokens import TokenResponse
from bulwark.common.db import Database

CODE_PREFIX = "bac_"
#: A PKCE code verifier (RFC 7636 §4.1): 43 to 128 unreserved characters.
_CODE_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}\Z")
#: An S256 code challenge: the base64url of a SHA-256, without padding (RFC 7636 §4.2).
_S256_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}\Z")
#: Longest ``state`` carried back to the client, in characters.
MAX_STATE_LENGTH = 512
#: The parameters of an authorization request that the consent form carries back.
REQUEST_PARAMETERS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
)


class AuthorizationRequest(msgspec.Struct, frozen=True):
    """A valid authorization request: the client, the redirect URI in force (and whether the
    request named it, or the client's only one is used), the scope granted if the user
    approves, the client's ``state`` (may be empty) and the challenge."""

    client: OAuthClient
    redirect_uri: str
    redirect_uri_sent: bool
    scope: str
    state: str
    code_challenge: str

    def as_parameters(self) -> dict[str, str]:
        """The request as the consent form's hidden fields carry it (empty values left
        out: an empty parameter is an absent one, RFC 6749 §3.1)."""
        parameters = {
            "response_type": "code",
            "client_id": self.client.client_id,
            "redirect_uri": self.redirect_uri if self.redirect_uri_sent else "",
            "scope": self.scope,
            "state": self.state,
            "code_challenge": self.code_challenge,
            "code_challenge_method": "S256",
        }
        return {name: value for name, value in parameters.items() if value}


class ShownError(Exception):
    """An error shown to the user on the page, never redirected: the client or the redirect
    URI cannot be trusted (RFC 6749 §4.1.2.1)."""


class RedirectedError(Exception):
    """An error sent to the client at its redirect URI (RFC 6749 §4.1.2.1)."""

    def __init__(self, redirect_uri: str, error: str, description: str, state: str) -> None:
        super().__init__(error)
        self.redirect_uri, self.error = redirect_uri, error
        self.description, self.state = description, state


def redirect_location(redirect_uri: str, parameters: Mapping[str, str]) -> str:
    """``redirect_uri`` with ``parameters`` added to its query (RFC 6749 §4.1.2: the URI's
    own query is kept); empty values are left out."""
    parts = urlsplit(redirect_uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(name, value) for name, value in parameters.items() if value]
    return urlunsplit(parts._replace(query=urlencode(query)))


def check_request(settings: AuthSettings, params: Mapping[str, str]) -> AuthorizationRequest:
    """Validate an authorization request's parameters (RFC 6749 §4.1.1, RFC 7636 §4.3).

    Raises:
        ShownError: unknown client, one not registered for this grant, or a redirect URI
            missing (when the client has several) or not exactly a registered one.
        RedirectedError: ``invalid_request`` (a missing or malformed parameter, a challenge
            method other than S256), ``unsupported_response_type``, ``invalid_scope``.
    """
    client = settings.oauth_client(params.get("client_id"))
    if client is None or "authorization_code" not in client.grant_types:
        raise ShownError("The application asking for access is not registered here.")
    sent = params.get("redirect_uri")
    redirect_uri = (
        client.redirect_uris[0] if sent is None and len(client.redirect_uris) == 1 else sent
    )
    if redirect_uri is None or redirect_uri not in client.redirect_uris:
        raise ShownError("The application sent a redirect address it has not registered.")
    state = params.get("state", "")

    def refuse(error: str, description: str) -> RedirectedError:
        return RedirectedError(redirect_uri, error, description, state[:MAX_STATE_LENGTH])

    if len(state) > MAX_STATE_LENGTH:
        raise refuse("invalid_request", f"state must be at most {MAX_STATE_LENGTH} characters.")
    response_type = params.get("response_type")
    if response_type is None:
        raise refuse("invalid_request", "response_type is required.")
    if response_type != "code":
        raise refuse("unsupported_response_type", "Only response_type=code is supported.")
    challenge = params.get("code_challenge")
    if challenge is None:
        raise refuse("invalid_request", "code_challenge is required (PKCE, RFC 7636).")
    if params.get("code_challenge_method") != "S256":
        raise refuse("invalid_request", "code_challenge_method must be S256.")
    if not _S256_CHALLENGE.match(challenge):
        raise refuse("invalid_request", "code_challenge must be a base64url SHA-256.")
    scope = params.get("scope") or client.default_scope
    if not client.allows_scope(scope):
        raise refuse("invalid_scope", "The requested scope is not allowed for this client.")
    return AuthorizationRequest(
        client=client,
        redirect_uri=redirect_uri,
        redirect_uri_sent=sent is not None,
        scope=scope,
        state=state,
        code_challenge=challenge,
    )


async def issue_code(
    db: Database,
    settings: AuthSettings,
    request: AuthorizationRequest,
    *,
    user_id: uuid.UUID,
    ip: str | None,
) -> str:
    """A new authorization code for ``user_id``'s approval of ``request``.

    Raises:
        DatabaseUnavailable: the database cannot answer (503; no code issued).
    """
    code = CODE_PREFIX + secrets.token_urlsafe(32)
    async with db.transaction() as conn:
        await queries.insert(
            conn,
            code_hash=hashlib.sha256(code.encode()).digest(),
            client_id=request.client.client_id,
            redirect_uri=request.redirect_uri,
            redirect_uri_sent=request.redirect_uri_sent,
            code_challenge=request.code_challenge,
            scope=request.scope,
            user_id=user_id,
            lifetime_seconds=settings.authorization_code_ttl,
        )
        await record(conn, SecurityEvent.AUTHORIZATION_CODE_ISSUED, user_id=user_id, ip=ip)
    return code


async def record_denial(db: Database, *, user_id: uuid.UUID, ip: str | None) -> None:
    """Record that ``user_id`` refused a client on the consent page (the client is told
    ``access_denied``).

    Raises:
        DatabaseUnavailable: the database cannot answer (503; the client is not told).
    """
    async with db.transaction() as conn:
        await record(conn, SecurityEvent.AUTHORIZATION_DENIED, user_id=user_id, ip=ip)


def s256(code_verifier: str) -> str:
    """The S256 code challenge of ``code_verifier`` (RFC 7636 §4.2)."""
    digest = hashlib.sha256(code_verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _same_redirect_uri(row: asyncpg.Record, redirect_uri: str | None) -> bool:
    """Whether a token request's ``redirect_uri`` (None: absent) is the code's: required
    and identical when the authorization request named one (RFC 6749 §4.1.3), and when
    given anyway."""
    if redirect_uri is None:
        return not row["redirect_uri_sent"]
    return bool(redirect_uri == row["redirect_uri"])


class Exchanged(msgspec.Struct, frozen=True):
    """The answer to a code exchange: the tokens; or, refused, the session a replayed code
    ended and the error to answer (None: ``invalid_grant``)."""

    tokens: TokenResponse | None = None
    ended_family: uuid.UUID | None = None
    refusal: OAuthError | None = None


async def exchange(
    conn: asyncpg.Connection,
    settings: AuthSettings,
    keys: SigningKeys,
    *,
    code: str,
    client: OAuthClient,
    redirect_uri: str | None,
    code_verifier: str | None,
    context: ClientContext,
) -> Exchanged:
    """Exchange ``code`` for a new session's tokens (RFC 6749 §4.1.3, RFC 7636 §4.6). The
    caller's transaction must commit whatever the outcome (a presented code is spent), and
    then list ``Exchanged.ended_family`` as revoked.

    Returns the tokens, or (for a code presented a second time) the session it ended and no
    tokens: the caller answers ``invalid_grant``.

    Raises:
        OAuthError: ``invalid_grant`` for an unknown or expired code, or one issued to
            another client, for another redirect URI, or whose challenge the verifier does
            not meet; the code is spent in each case.
    """
    code_hash = hashlib.sha256(code.encode()).digest()
    row = await queries.lock(conn, code_hash) if code.startswith(CODE_PREFIX) else None
    if row is None:
        raise OAuthError("invalid_grant", "The authorization code is invalid.")
    if row["used_at"] is not None:
        family_id = row["family_id"]
        if family_id is not None:
            await session_queries.revoke_family(conn, family_id, "authorization_code_reused")
        await record(
            conn,
            SecurityEvent.AUTHORIZATION_CODE_REUSED,
            user_id=row["user_id"],
            family_id=family_id,
            ip=context.ip,
        )
        return Exchanged(ended_family=family_id)
    await queries.mark_used(conn, code_hash, None)
    if (
        row["expires_at"] <= row["now"]
        or row["client_id"] != client.client_id
        or not _same_redirect_uri(row, redirect_uri)
        or code_verifier is None
        or not _CODE_VERIFIER.match(code_verifier)
        or not secrets.compare_digest(s256(code_verifier), row["code_challenge"])
    ):
        raise OAuthError("invalid_grant", "The authorization code is invalid.")
    family_id, tokens = await session_rules.start_session(
        conn,
        settings,
        keys,
        user_id=row["user_id"],
        device_name=client.name,
        client=context,
        client_id=client.client_id,
        scope=row["scope"],
        event=SecurityEvent.AUTHORIZATION_CODE_EXCHANGED,
    )
    await queries.mark_used(conn, code_hash, family_id)
    return Exchanged(tokens=tokens)
