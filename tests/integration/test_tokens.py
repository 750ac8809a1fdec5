"""Access tokens: verifiable by an independent JOSE library from the JWKS alone.

Forgeries (and genuine tokens misused) are in ``test_forged_tokens.py``."""

from __future__ import annotations

import jwt
import pytest

from .conftest import RunningStack
from .helpers import login, register

pytestmark = pytest.mark.security(stride="S", asvs=("V9.1",))


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
