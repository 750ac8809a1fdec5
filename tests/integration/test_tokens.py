"""Access tokens: verifiable by an independent JOSE library from the JWKS alone, and
forgeries refused by the API with 401 (never 500)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from .conftest import RunningStack
from .helpers import bearer, login, register

SQL_KID = "' OR '1'='1"


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _hs256(header: dict[str, object], payload: dict[str, object], secret: str) -> str:
    """A token MACed with ``secret`` (the classic RS/ES -> HS algorithm-confusion attack)."""
    signing_input = f"{_b64(header)}.{_b64(payload)}"
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def test_pyjwt_verifies_the_access_token_from_the_jwks(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    token = str(login(stack.auth_url, user)["access_token"])
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["typ"] == "at+jwt"
    signing_key = jwt.PyJWKClient(f"{stack.auth_url}/.well-known/jwks.json").get_signing_key(
        header["kid"]
    )
    claims = jwt.decode(
        token,
        signing_key.key,
        algorithms=["ES256"],
        audience="bulwark-api",
        issuer=stack.env["auth"]["ISSUER"],
        options={"require": ["exp", "iat", "sub", "jti", "iss", "aud"]},
    )
    assert claims["sub"] == user.user_id
    assert claims["client_id"]
    assert claims["sid"]
    assert claims["scope"] == "api"
    assert claims["exp"] - claims["iat"] == 900


def test_forged_tokens_are_401(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    token = str(login(stack.auth_url, user)["access_token"])
    header_b64, payload_b64, signature = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=="))
    payload = json.loads(base64.urlsafe_b64decode(payload_b64 + "=="))
    jwks = httpx.get(f"{stack.auth_url}/.well-known/jwks.json").json()
    public_jwk = json.dumps(jwks["keys"][0])
    attacker = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())

    forgeries = {
        "alg none": f"{_b64({**header, 'alg': 'none'})}.{payload_b64}.",
        "hs256 keyed with the public jwk": _hs256({**header, "alg": "HS256"}, payload, public_jwk),
        "attacker key under real kid": jwt.encode(
            payload, attacker, algorithm="ES256", headers={"kid": header["kid"], "typ": "at+jwt"}
        ),
        "changed payload, old signature": (
            f"{header_b64}.{_b64({**payload, 'sub': '00000000-0000-0000-0000-000000000000'})}"
            f".{signature}"
        ),
        "expired": jwt.encode(
            {**payload, "exp": now - 3600, "iat": now - 7200},
            attacker,
            algorithm="ES256",
            headers={"kid": header["kid"], "typ": "at+jwt"},
        ),
        "kid traversal": f"{_b64({**header, 'kid': '../../etc/passwd'})}.{payload_b64}.{signature}",
        "kid sql": f"{_b64({**header, 'kid': SQL_KID})}.{payload_b64}.{signature}",
        "junk": "a" * 10_000,
        "wrong typ": f"{_b64({**header, 'typ': 'JWT'})}.{payload_b64}.{signature}",
    }
    for name, forged in forgeries.items():
        response = httpx.get(f"{stack.api_url}/v1/me", headers=bearer(forged))
        assert response.status_code == 401, name
        assert response.headers["content-type"].startswith("application/problem+json"), name
    # The genuine token still works, and is refused in the query string.
    assert httpx.get(f"{stack.api_url}/v1/me", headers=bearer(token)).status_code == 200
    in_query = httpx.get(f"{stack.api_url}/v1/me", params={"access_token": token})
    assert in_query.status_code == 401
