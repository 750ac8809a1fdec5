"""The access-token verifier against a local key source: every rule of RFC 9068 and
RFC 8725 that Bulwark relies on, and forgeries rejected."""

import base64
import json
import time

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from bulwark.common.access_tokens import AccessTokenVerifier, InvalidAccessToken

ISSUER, AUDIENCE = "https://auth.example", "bulwark-api"


class Keys:
    def __init__(self, *keys: ECKey | RSAKey) -> None:
        self.keys = {str(key.kid): key for key in keys}
        self.lookups = 0

    async def get(self, kid: str) -> ECKey | RSAKey | None:
        self.lookups += 1
        return self.keys.get(kid)


def _key() -> ECKey:
    return ECKey.generate_key("P-256", parameters={"alg": "ES256"}, auto_kid=True)


def _claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "client_id": "app",
        "iat": now,
        "exp": now + 900,
        "jti": "j",
        "sid": "s",
        "scope": "api",
    }
    claims.update(overrides)
    return claims


def _sign(key: ECKey, claims: dict[str, object], **header: object) -> str:
    return jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": key.kid, **header}, claims, key)


def _b64(value: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


@pytest.fixture
def key() -> ECKey:
    return _key()


@pytest.fixture
def verifier(key: ECKey) -> AccessTokenVerifier:
    return AccessTokenVerifier(Keys(key), issuer=ISSUER, audience=AUDIENCE)


async def test_a_genuine_token_verifies(key: ECKey, verifier: AccessTokenVerifier) -> None:
    claims = await verifier.verify(_sign(key, _claims()))
    assert claims.sub == "user-1"
    assert claims.sid == "s"


async def test_leeway_is_sixty_seconds(key: ECKey, verifier: AccessTokenVerifier) -> None:
    now = int(time.time())
    await verifier.verify(_sign(key, _claims(exp=now - 30)))
    with pytest.raises(InvalidAccessToken):
        await verifier.verify(_sign(key, _claims(exp=now - 90)))
    with pytest.raises(InvalidAccessToken):
        await verifier.verify(_sign(key, _claims(nbf=now + 120)))


@pytest.mark.parametrize(
    "overrides",
    [
        {"iss": "https://evil.example"},
        {"aud": "another-api"},
        {"sub": None},
        {"sid": None},
    ],
)
async def test_claims_must_match_exactly(
    key: ECKey, verifier: AccessTokenVerifier, overrides: dict[str, object]
) -> None:
    claims = {k: v for k, v in _claims(**overrides).items() if v is not None}
    with pytest.raises(InvalidAccessToken):
        await verifier.verify(_sign(key, claims))


@pytest.mark.parametrize(
    "header",
    [
        {"typ": "JWT"},
        {"crit": ["exp"]},
        {"jku": "https://evil.example/jwks"},
        {"x5u": "https://evil.example/cert"},
        {"kid": "../../../etc/passwd"},
        {"kid": "x" * 10_000},
    ],
)
async def test_dangerous_headers_are_rejected(
    key: ECKey, verifier: AccessTokenVerifier, header: dict[str, object]
) -> None:
    token = (
        f"{_b64({'alg': 'ES256', 'typ': 'at+jwt', 'kid': key.kid, **header})}.{_b64(_claims())}.sig"
    )
    with pytest.raises(InvalidAccessToken):
        await verifier.verify(token)


async def test_embedded_jwk_is_never_trusted(verifier: AccessTokenVerifier) -> None:
    attacker = _key()
    token = _sign(attacker, _claims(), jwk=attacker.as_dict(private=False))
    with pytest.raises(InvalidAccessToken):
        await verifier.verify(token)


async def test_alg_none_and_hmac_are_rejected(key: ECKey, verifier: AccessTokenVerifier) -> None:
    unsigned = f"{_b64({'alg': 'none', 'typ': 'at+jwt', 'kid': key.kid})}.{_b64(_claims())}."
    with pytest.raises(InvalidAccessToken):
        await verifier.verify(unsigned)
    secret = OctKey.import_key(json.dumps(key.as_dict(private=False)).encode())
    hmac_token = jwt.encode(
        {"alg": "HS256", "typ": "at+jwt", "kid": key.kid}, _claims(), secret, algorithms=["HS256"]
    )
    with pytest.raises(InvalidAccessToken):
        await verifier.verify(hmac_token)


async def test_attacker_key_under_the_real_kid_is_rejected(
    key: ECKey, verifier: AccessTokenVerifier
) -> None:
    attacker = ECKey.generate_key("P-256", parameters={"alg": "ES256", "kid": key.kid})
    with pytest.raises(InvalidAccessToken):
        await verifier.verify(_sign(attacker, _claims()))


async def test_a_changed_payload_fails_the_signature(
    key: ECKey, verifier: AccessTokenVerifier
) -> None:
    header, _, signature = _sign(key, _claims()).split(".")
    with pytest.raises(InvalidAccessToken):
        await verifier.verify(f"{header}.{_b64(_claims(sub='admin'))}.{signature}")
