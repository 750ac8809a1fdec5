"""Minting of access tokens (RFC 9068 JWT profile) and refresh tokens.

Access token header: ``{"alg": <the active key's alg: ES256 or RS256>, "typ": "at+jwt",
"kid": ...}``; claims: ``iss``,
``aud``, ``sub``, ``client_id``, ``iat``, ``exp``, ``jti``, ``sid`` (the refresh family),
``scope``, ``email_verified`` (OpenID Connect Core §5.1: the address was proven to reach the
user; docs/account.md). Refresh tokens are opaque: ``brt_`` + 256 random bits in base64url,
stored only as their SHA-256 hash.
"""

import hashlib
import re
import secrets
import time
import uuid

import msgspec
from joserfc import jwt

from bulwark.auth.keys import SigningKeys

REFRESH_TOKEN_PREFIX = "brt_"  # noqa: S105  # a format prefix, not a secret
_REFRESH_TOKEN = re.compile(r"^brt_[A-Za-z0-9_-]{43}\Z")
DEFAULT_SCOPE = "api"


class TokenResponse(msgspec.Struct, frozen=True):
    """The OAuth 2.0 successful token response (RFC 6749 §5.1); ``expires_in`` in seconds."""

    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str
    scope: str


def mint_access_token(
    keys: SigningKeys,
    *,
    issuer: str,
    audience: str,
    client_id: str,
    user_id: uuid.UUID,
    family_id: uuid.UUID,
    lifetime: int,
    scope: str = DEFAULT_SCOPE,
    email_verified: bool = False,
) -> str:
    """A signed access token for ``user_id`` in session ``family_id``, valid ``lifetime`` s,
    signed by the active key with that key's algorithm."""
    kid, algorithm, private_key = keys.signer()
    now = int(time.time())
    header = {"alg": algorithm, "typ": "at+jwt", "kid": kid}
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": str(user_id),
        "client_id": client_id,
        "iat": now,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
        "sid": str(family_id),
        "scope": scope,
        "email_verified": email_verified,
    }
    return jwt.encode(header, claims, private_key, algorithms=[algorithm])


def new_refresh_token() -> tuple[str, bytes]:
    """A fresh refresh token and the hash to store: ``(token, sha256(token))``."""
    token = REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, hash_refresh_token(token)


def hash_refresh_token(token: str) -> bytes:
    """SHA-256 of a refresh token (256-bit random input needs no slow hash)."""
    return hashlib.sha256(token.encode()).digest()


def is_refresh_token_shaped(token: str) -> bool:
    """True when ``token`` has the refresh-token format (checked before any database work)."""
    return bool(_REFRESH_TOKEN.match(token))
