"""Access tokens carry the RFC 9068 header and claims; refresh tokens are opaque and hashed."""

import uuid
from pathlib import Path

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from bulwark.auth.keys import generate_key, load_signing_keys, write_key
from bulwark.auth.tokens import (
    hash_refresh_token,
    is_refresh_token_shaped,
    mint_access_token,
    new_refresh_token,
)
from bulwark.common.access_tokens import AccessTokenVerifier

pytestmark = pytest.mark.security(stride="SI", asvs=("V9.2", "V11.5"))


def test_access_token_header_and_claims(tmp_path: Path) -> None:
    keys = load_signing_keys(tmp_path, "test", generate=True)
    user_id, family_id = uuid.uuid4(), uuid.uuid4()
    token = mint_access_token(
        keys,
        issuer="https://auth.example",
        audience="bulwark-api",
        client_id="app",
        user_id=user_id,
        family_id=family_id,
        lifetime=900,
    )
    decoded = jwt.decode(token, keys.private_key, algorithms=["ES256"])
    assert decoded.header == {"alg": "ES256", "typ": "at+jwt", "kid": keys.active_kid}
    claims = decoded.claims
    assert claims["sub"] == str(user_id)
    assert claims["sid"] == str(family_id)
    assert claims["exp"] - claims["iat"] == 900
    assert {"iss", "aud", "client_id", "jti", "scope"} <= claims.keys()


def test_refresh_tokens_are_256_bit_and_stored_as_hashes() -> None:
    token, stored = new_refresh_token()
    assert is_refresh_token_shaped(token)
    assert stored == hash_refresh_token(token)
    assert token.encode() not in stored
    assert len({new_refresh_token()[0] for _ in range(100)}) == 100
    assert not is_refresh_token_shaped("brt_short")
    assert not is_refresh_token_shaped(token + "x")


async def test_an_rs256_active_key_signs_rs256_tokens_the_verifier_accepts(tmp_path: Path) -> None:
    write_key(tmp_path, generate_key("test", alg="RS256"))
    keys = load_signing_keys(tmp_path, "test", generate=False)

    class Source:
        async def get(self, kid: str) -> ECKey | RSAKey | None:
            return keys.public_key(kid)

    token = mint_access_token(
        keys,
        issuer="https://auth.example",
        audience="bulwark-api",
        client_id="app",
        user_id=uuid.uuid4(),
        family_id=uuid.uuid4(),
        lifetime=900,
    )
    assert jwt.decode(token, keys.private_key, algorithms=["RS256"]).header["alg"] == "RS256"
    verifier = AccessTokenVerifier(
        Source(), issuer="https://auth.example", audience="bulwark-api", max_lifetime=900
    )
    assert (await verifier.verify(token)).client_id == "app"
