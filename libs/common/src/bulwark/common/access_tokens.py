"""Verification of Bulwark access tokens (RFC 9068 JWT profile, RFC 8725 JWT BCP).

The verifier trusts only keys from the auth service's JWKS (RFC 7517), fetched over HTTP and
cached. The algorithm comes from the key (its JWK ``alg``), never from the token header; only
ES256 and RS256 keys are usable, so ``none`` and HMAC tokens can never verify. Headers that
point at other keys (``jku``, ``x5u``, ``jwk``, ``x5c``) and any ``crit`` header are rejected.

Everything in a token is client input until the signature says otherwise: the header and
the claims are decoded here with bounded parsers (size, nesting, member count) before joserfc
sees them, so a hostile token is an ``InvalidAccessToken`` (401), never a crash. A validly
signed token is refused too when it claims to live longer than the issuer's lifetime.
"""

import asyncio
import base64
import binascii
import re
import time
from collections.abc import Callable
from typing import Annotated, Any, Protocol

import httpx
import msgspec
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey
from litestar import Request

from bulwark.common.logging import get_logger
from bulwark.common.problems import BadRequest, Unauthorized
from bulwark.common.request_bodies import (
    DuplicateKeyError,
    JsonLimits,
    RefusedJsonError,
    loads_bounded,
)

_log = get_logger(__name__)

#: Clock skew tolerated on ``exp``, ``nbf`` and ``iat``, in seconds (at most 60 by policy).
LEEWAY_SECONDS = 60
#: Algorithms a JWKS key may be bound to; everything else in a JWKS is ignored.
SUPPORTED_ALGORITHMS = frozenset({"ES256", "RS256"})
#: Longest token accepted, in bytes; anything longer is rejected before parsing.
MAX_TOKEN_BYTES = 4096
#: Upper bounds of `JwksCache`: a key set is fresh for at most `JWKS_MAX_TTL_SECONDS`, and the
#: last good set keeps serving while fetches fail for `JWKS_STALE_SECONDS` more, so a verifier
#: can hold a key for `JWKS_HOLD_SECONDS` after the last fetch that listed it.
JWKS_MAX_TTL_SECONDS = 3600
JWKS_STALE_SECONDS = 3600
JWKS_HOLD_SECONDS = JWKS_MAX_TTL_SECONDS + JWKS_STALE_SECONDS
#: Bounds of a fetched JWKS document (RFC 7517): a few keys; RSA moduli and ``x5c``
#: certificates are the longest strings. A document beyond them is a failed fetch.
JWKS_JSON_LIMITS = JsonLimits(max_depth=8, max_values=4096, max_string=16384, max_number=32)
_FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit"})
_KID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
#: Bounds of a decoded JOSE header or claims set, checked before any other parser sees them
#: (joserfc's would recurse into a deeply nested one and fail with a RecursionError). Ours
#: are flat objects of a dozen strings and numbers; ``aud`` may be a list.
TOKEN_JSON_LIMITS = JsonLimits(
    max_depth=4, max_values=128, max_string=MAX_TOKEN_BYTES, max_number=24
)


class InvalidAccessToken(Exception):  # noqa: N818  # RFC 6750 error code "invalid_token"
    """The token is malformed, forged, expired or not meant for us. The message says why,
    for logs; clients get a generic 401."""


class JwksUnavailable(Exception):  # noqa: N818  # reads as a state, like RFC 6750's codes
    """No key set could be fetched and no earlier one is cached."""


#: A canonical, lower-case UUID, as Bulwark's auth service writes ``sub`` and ``sid``.
_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z"
_Uuid = Annotated[str, msgspec.Meta(pattern=_UUID)]
_Text = Annotated[str, msgspec.Meta(max_length=1024)]


class AccessTokenClaims(msgspec.Struct, frozen=True):
    """Claims of a verified access token (RFC 9068 §2.2); times are Unix seconds.

    ``sub`` (the user) and ``sid`` (the device session) are canonical UUIDs, as Bulwark's
    auth service issues them: a token whose signature holds but whose claims have another
    shape (a leaked key, a foreign issuer sharing it) is refused like any invalid token.
    """

    iss: _Text
    sub: _Uuid
    aud: _Text | list[_Text]
    exp: Annotated[int, msgspec.Meta(ge=0, le=2**53)]
    iat: Annotated[int, msgspec.Meta(ge=0, le=2**53)]
    jti: _Text
    client_id: _Text
    sid: _Uuid
    scope: _Text = ""
    #: OpenID Connect Core §5.1; absent (older tokens) reads as not verified.
    email_verified: bool = False
    #: Not a claim: the ``kid`` of the JOSE header the token was verified with.
    kid: str = ""


def _segment_json(segment: str, what: str) -> dict[str, object]:
    """A JOSE header or claims segment: strict base64url (RFC 7515 §2, no padding) of a JSON
    object within `TOKEN_JSON_LIMITS`, parsed without recursion."""
    if not _BASE64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise InvalidAccessToken(f"{what} is not base64url")
    try:
        value = loads_bounded(
            base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)), TOKEN_JSON_LIMITS
        )
    except DuplicateKeyError:
        raise InvalidAccessToken(f"{what} gives a member twice") from None
    except (RefusedJsonError, binascii.Error) as refused:
        raise InvalidAccessToken(f"{what} is refused: {refused}") from None
    if not isinstance(value, dict):
        raise InvalidAccessToken(f"{what} is not a JSON object")
    return value


class KeySource(Protocol):
    """Where a verifier finds public keys by ``kid`` (a remote JWKS, or the issuer's own)."""

    async def get(self, kid: str) -> ECKey | RSAKey | None:
        """The key named ``kid``, or None."""
        ...


class JwksCache:
    """The auth service's public keys, fetched from ``jwks_url`` and cached.

    The cache lifetime follows the response's ``Cache-Control: max-age`` (bounded to
    ``[min_ttl, max_ttl]`` seconds). An unknown ``kid`` triggers a refetch at most once per
    ``refetch_cooldown`` seconds; concurrent callers share one fetch (single flight). When a
    fetch fails, the last good set keeps serving (for at most ``max_ttl + stale_ttl`` seconds
    after it was fetched) and no new fetch is tried for ``failure_backoff`` seconds, so an
    auth outage costs the API one timed-out fetch per backoff, not one per request.
    """

    def __init__(
        self,
        jwks_url: str,
        *,
        client: httpx.AsyncClient | None = None,
        min_ttl: float = 30,
        max_ttl: float = JWKS_MAX_TTL_SECONDS,
        refetch_cooldown: float = 30,
        failure_backoff: float = 5,
        stale_ttl: float = JWKS_STALE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = jwks_url
        self._clock = clock
        self._client = client or httpx.AsyncClient(timeout=2.0)
        self._min_ttl, self._max_ttl = min_ttl, max_ttl
        self._cooldown, self._backoff, self._stale_ttl = (
            refetch_cooldown,
            failure_backoff,
            stale_ttl,
        )
        self._keys: dict[str, ECKey | RSAKey] = {}
        self._fetched_at = float("-inf")  # last successful fetch
        self._fresh_until = float("-inf")  # cache lifetime from Cache-Control
        self._next_attempt = float("-inf")  # no fetch before this (cooldown or backoff)
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def get(self, kid: str) -> ECKey | RSAKey | None:
        """The key with this ``kid``, or None when the key set has no such key.

        Raises:
            JwksUnavailable: no key set was ever fetched, or the last good one is older than
                ``max_ttl + stale_ttl``, and a fetch is failing or backing off.
        """
        if self._wants_fetch(kid, self._clock()):
            async with self._lock:
                # Single flight: whoever waited on the lock re-checks before fetching.
                if self._wants_fetch(kid, self._clock()):
                    await self._fetch()
        if self._clock() - self._fetched_at > self._max_ttl + self._stale_ttl:
            raise JwksUnavailable("no key set, or only one too old to trust")
        return self._keys.get(kid)

    async def ready(self) -> bool:
        """True when a usable key set is cached or could be fetched (for ``/readyz``)."""
        try:
            await self.get("")
        except JwksUnavailable:
            return False
        return bool(self._keys)

    def _wants_fetch(self, kid: str, now: float) -> bool:
        stale_or_unknown = now >= self._fresh_until or kid not in self._keys
        return stale_or_unknown and now >= self._next_attempt

    async def _fetch(self) -> None:
        started = self._clock()
        try:
            response = await self._client.get(self._url)
            response.raise_for_status()
            keys = self._parse(loads_bounded(response.content, JWKS_JSON_LIMITS))
        except (httpx.HTTPError, ValueError, TypeError) as exc:
            # Keep serving the last good set; try again only after the backoff.
            _log.warning("jwks_fetch_failed", url=self._url, error=type(exc).__name__)
            self._next_attempt = self._clock() + self._backoff
            return
        self._keys = keys
        self._fetched_at = self._clock()
        self._fresh_until = self._fetched_at + self._ttl(response.headers.get("cache-control"))
        self._next_attempt = started + self._cooldown

    def _ttl(self, cache_control: str | None) -> float:
        match = re.search(r"max-age=(\d+)", cache_control or "")
        ttl = float(match.group(1)) if match else self._min_ttl
        return min(max(ttl, self._min_ttl), self._max_ttl)

    @staticmethod
    def _parse(document: object) -> dict[str, ECKey | RSAKey]:
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise TypeError("not a JWKS document")
        keys: dict[str, ECKey | RSAKey] = {}
        for item in document["keys"]:
            if not isinstance(item, dict) or item.get("alg") not in SUPPORTED_ALGORITHMS:
                continue
            if "d" in item or not isinstance(item.get("kid"), str):
                continue
            try:
                key = KeySet.import_key_set({"keys": [item]}).keys[0]
            except (JoseError, ValueError, TypeError):
                continue
            if isinstance(key, ECKey | RSAKey):
                keys[item["kid"]] = key
        return keys


class AccessTokenVerifier:
    """Verifies access tokens for one issuer and audience against a ``KeySource``.

    ``max_lifetime`` is the longest ``exp - iat`` accepted, in seconds: the issuer's
    access-token lifetime (``ACCESS_TOKEN_TTL_SECONDS``). A token claiming to live longer,
    even one validly signed, is refused: a leaked signing key cannot mint tokens that
    outlast its rotation by more than this.
    """

    def __init__(self, jwks: KeySource, *, issuer: str, audience: str, max_lifetime: int) -> None:
        self._jwks = jwks
        self._issuer = issuer
        self._audience = audience
        self._max_lifetime = max_lifetime

    async def verify(self, token: str) -> AccessTokenClaims:
        """Verify ``token`` (JWS compact form) and return its claims.

        Checks, in order: size and shape; the header and claims are base64url JSON objects
        within `TOKEN_JSON_LIMITS`, no member given twice; header ``typ`` is ``at+jwt``
        (RFC 9068 §4); no ``jku``/``x5u``/``jwk``/``x5c``/``crit``; ``kid`` is in the JWKS;
        ``alg`` equals the key's own ``alg``; the signature; ``iss`` and ``aud`` exactly;
        ``exp``, ``nbf``, ``iat`` with ``LEEWAY_SECONDS``; ``exp - iat`` at most
        ``max_lifetime + LEEWAY_SECONDS``; the claims Bulwark requires.

        Raises:
            InvalidAccessToken: any check failed.
            JwksUnavailable: the key set cannot be had (callers answer 503, not 401).
        """
        if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
            raise InvalidAccessToken("not a compact JWS of acceptable size")
        header_segment, claims_segment, _ = token.split(".")
        header = _segment_json(header_segment, "header")
        # Parsed here, before the signature is checked, so that a hostile payload costs a
        # bounded parse and nothing else; these are the claims used once it verifies.
        raw_claims = _segment_json(claims_segment, "claims")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in {"at+jwt", "application/at+jwt"}:
            raise InvalidAccessToken("typ is not at+jwt")
        if _FORBIDDEN_HEADERS & header.keys():
            raise InvalidAccessToken("header names a key source or crit")
        kid = header.get("kid")
        if not isinstance(kid, str) or not _KID.fullmatch(kid):
            raise InvalidAccessToken("kid missing or malformed")
        key = await self._jwks.get(kid)
        if key is None:
            raise InvalidAccessToken("unknown kid")
        algorithm = key.get("alg")
        if header.get("alg") != algorithm:
            raise InvalidAccessToken("alg does not match the key")
        try:
            jws.deserialize_compact(token, key, algorithms=[str(algorithm)])
            self._registry().validate(raw_claims)
            claims = msgspec.convert({**raw_claims, "kid": kid}, AccessTokenClaims)
        except (JoseError, ValueError, TypeError, msgspec.ValidationError) as exc:
            raise InvalidAccessToken(f"rejected: {type(exc).__name__}") from None
        audiences = [claims.aud] if isinstance(claims.aud, str) else claims.aud
        if self._audience not in audiences:
            raise InvalidAccessToken("wrong audience")
        if claims.iat > time.time() + LEEWAY_SECONDS:
            raise InvalidAccessToken("issued in the future")
        if claims.exp - claims.iat > self._max_lifetime + LEEWAY_SECONDS:
            raise InvalidAccessToken("lifetime longer than accepted")
        return claims

    def _registry(self) -> jwt.JWTClaimsRegistry:
        return jwt.JWTClaimsRegistry(
            leeway=LEEWAY_SECONDS,
            iss={"essential": True, "value": self._issuer},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            jti={"essential": True},
            sid={"essential": True},
            client_id={"essential": True},
        )


def bearer_token(request: Request[Any, Any, Any]) -> str:
    """The RFC 6750 §2.1 bearer token from the Authorization header, the only place accepted
    (never the query string or a form body, where URLs and logs would keep it).

    Raises:
        Unauthorized: no header, another scheme, or an ``access_token`` query parameter.
        BadRequest: more than one Authorization header (RFC 6750 §3.1 ``invalid_request``).
    """
    if "access_token" in request.query_params:
        raise Unauthorized("Send the token in the Authorization header.", "invalid_request")
    headers = request.headers.getall("authorization", [])
    if len(headers) > 1:
        raise BadRequest("Send exactly one Authorization header.")
    scheme, _, token = (headers[0] if headers else "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("A bearer access token is required.", error=None)
    return token.strip()
