"""Forged and misused access tokens at the resource API (RFC 8725, RFC 9068, RFC 7515/7517).

Every token here must be answered ``401`` with an ``application/problem+json`` body, never a
500. The claim cases (expired, not yet valid, wrong audience, wrong issuer, ``typ: JWT``,
``crit``) are signed with the stack's REAL signing key, read from its ``KEYS_DIR`` (the test
environment's own key), so that only the check under test can reject them; a control token
signed the same way is accepted, which proves the signer is right.

Tokens that name a key by URL (``jku``, ``x5u``) or carry one (``jwk``, ``x5c``) point at a
key server this test runs on 127.0.0.1, serving the attacker's key: it must receive no request.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import NameOID

from bulwark.devstack.rules import packaged_rules_with_raised_limits

from .conftest import RunningStack, StackFactory
from .helpers import MobileUser, bearer, login, register

pytestmark = pytest.mark.security(stride="SE", asvs=("V9.1", "V9.2"))

JsonObject = dict[str, Any]
PROBLEM_JSON = "application/problem+json"
LEEWAY_SECONDS = 60  # the verifier's policy; the claim cases go well beyond it


# --- JOSE by hand: nothing here may refuse to build a malformed token ----------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def b64json(value: object) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def es256_signature(key: ec.EllipticCurvePrivateKey, signing_input: str) -> bytes:
    """The JWS ES256 signature (RFC 7518 §3.4): raw ``r || s``, 32 bytes each."""
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def es256(key: ec.EllipticCurvePrivateKey, header: JsonObject, claims: object) -> str:
    """A compact JWS of ``claims`` under ``header``, signed with ``key``."""
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    return f"{signing_input}.{b64url(es256_signature(key, signing_input))}"


def hs256(secret: bytes, header: JsonObject, claims: object) -> str:
    """A compact JWS MACed with ``secret`` (the asymmetric -> HMAC confusion attack)."""
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    return f"{signing_input}.{b64url(hmac.digest(secret, signing_input.encode(), 'sha256'))}"


def public_jwk(key: ec.EllipticCurvePrivateKey, kid: str | None = None) -> JsonObject:
    numbers = key.public_key().public_numbers()
    jwk: JsonObject = {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
        "alg": "ES256",
        "use": "sig",
    }
    return {**jwk, "kid": kid} if kid else jwk


def _jwk_number(jwk: JsonObject, name: str) -> int:
    return int.from_bytes(b64url_decode(str(jwk[name])), "big")


def public_key_from_jwk(jwk: JsonObject) -> ec.EllipticCurvePublicKey:
    x, y = _jwk_number(jwk, "x"), _jwk_number(jwk, "y")
    return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()


def private_key_from_jwk(jwk: JsonObject) -> ec.EllipticCurvePrivateKey:
    x, y = _jwk_number(jwk, "x"), _jwk_number(jwk, "y")
    public = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1())
    return ec.EllipticCurvePrivateNumbers(_jwk_number(jwk, "d"), public).private_key()


def self_signed_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker.example")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


# --- the attacker's key server ------------------------------------------------------------


class KeyServer:
    """An HTTP server on 127.0.0.1 serving the attacker's JWKS and certificate; ``hits``
    lists every path requested (the API must never request any)."""

    def __init__(self, jwks: JsonObject, certificate_pem: bytes) -> None:
        self.hits: list[str] = []
        routes = {
            "/jwks.json": ("application/jwk-set+json", json.dumps(jwks).encode()),
            "/cert.pem": ("application/pem-certificate-chain", certificate_pem),
        }
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                content_type, body = routes.get(self.path, ("text/plain", b"not found"))
                self.send_response(200 if self.path in routes else 404)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: ``hits`` is the record."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> KeyServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# --- fixtures -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Genuine:
    """A genuine access token of the default stack, taken apart, and the keys around it."""

    token: str
    header: JsonObject
    claims: JsonObject
    user: MobileUser
    public_jwk: JsonObject  # the entry of the stack's JWKS for the token's kid
    real_key: ec.EllipticCurvePrivateKey  # the stack's signing key, from KEYS_DIR

    @property
    def segments(self) -> list[str]:
        return self.token.split(".")

    @property
    def kid(self) -> str:
        return str(self.header["kid"])

    def valid_claims(self, **overrides: object) -> JsonObject:
        """Fresh, valid claims for this user (new ``jti``, ``iat`` now), with overrides."""
        now = int(time.time())
        lifetime = int(self.claims["exp"]) - int(self.claims["iat"])
        claims = {**self.claims, "iat": now, "exp": now + lifetime, "jti": secrets.token_hex(16)}
        claims.update(overrides)
        return claims


def read_signing_key(keys_dir: Path, kid: str) -> ec.EllipticCurvePrivateKey:
    """The private key named ``kid`` among the stack's key files (``<kid>.json`` holding a
    ``private_jwk``, see ``bulwark.auth.keys``)."""
    for path in sorted(keys_dir.glob("*.json")):
        stored = json.loads(path.read_text())
        jwk = stored.get("private_jwk", stored)
        if stored.get("kid", jwk.get("kid")) == kid and "d" in jwk:
            assert jwk.get("kty") == "EC", "these tests sign with an ES256 (P-256) test key"
            return private_key_from_jwk(jwk)
    raise AssertionError(f"no private key with kid {kid!r} in {keys_dir}")


@pytest.fixture(scope="module")
def genuine(stack: RunningStack) -> Genuine:
    user = register(stack.auth_url)
    token = str(login(stack.auth_url, user)["access_token"])
    header_b64, claims_b64, _ = token.split(".")
    header = json.loads(b64url_decode(header_b64))
    jwks = httpx.get(f"{stack.auth_url}/.well-known/jwks.json").json()
    (jwk,) = [key for key in jwks["keys"] if key["kid"] == header["kid"]]
    return Genuine(
        token=token,
        header=header,
        claims=json.loads(b64url_decode(claims_b64)),
        user=user,
        public_jwk=jwk,
        real_key=read_signing_key(stack.config.keys_dir, header["kid"]),
    )


@pytest.fixture(scope="module")
def attacker() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def key_server(attacker: ec.EllipticCurvePrivateKey) -> Iterator[KeyServer]:
    jwks = {"keys": [public_jwk(attacker, kid="attacker")]}
    pem = self_signed_certificate(attacker).public_bytes(serialization.Encoding.PEM)
    with KeyServer(jwks, pem) as server:
        yield server


# --- the forgeries ------------------------------------------------------------------------

Forge = Callable[[Genuine, ec.EllipticCurvePrivateKey, KeyServer], str]


def _alg_none(alg: str, *, keep_signature: bool) -> Forge:
    def forge(g: Genuine, _a: ec.EllipticCurvePrivateKey, _s: KeyServer) -> str:
        header_b64 = b64json({**g.header, "alg": alg})
        return f"{header_b64}.{g.segments[1]}.{g.segments[2] if keep_signature else ''}"

    return forge


def _hs256_public_pem(g: Genuine, _a: ec.EllipticCurvePrivateKey, _s: KeyServer) -> str:
    pem = public_key_from_jwk(g.public_jwk).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    return hs256(pem, {**g.header, "alg": "HS256"}, g.valid_claims())


def _hs256_public_jwk(g: Genuine, _a: ec.EllipticCurvePrivateKey, _s: KeyServer) -> str:
    return hs256(json.dumps(g.public_jwk).encode(), {**g.header, "alg": "HS256"}, g.valid_claims())


def _attacker_key_real_kid(g: Genuine, a: ec.EllipticCurvePrivateKey, _s: KeyServer) -> str:
    return es256(a, g.header, g.valid_claims())


def _embedded_jwk(*, with_kid: bool) -> Forge:
    def forge(g: Genuine, a: ec.EllipticCurvePrivateKey, _s: KeyServer) -> str:
        header: JsonObject = {"alg": "ES256", "typ": "at+jwt", "jwk": public_jwk(a)}
        if with_kid:
            header["kid"] = g.kid
        return es256(a, header, g.valid_claims())

    return forge


def _key_url(parameter: str, path: str, *, real_kid: bool) -> Forge:
    def forge(g: Genuine, a: ec.EllipticCurvePrivateKey, s: KeyServer) -> str:
        kid = g.kid if real_kid else "attacker"
        header = {"alg": "ES256", "typ": "at+jwt", "kid": kid, parameter: f"{s.url}{path}"}
        return es256(a, header, g.valid_claims())

    return forge


def _x5c(g: Genuine, a: ec.EllipticCurvePrivateKey, _s: KeyServer) -> str:
    der = self_signed_certificate(a).public_bytes(serialization.Encoding.DER)
    header = {
        "alg": "ES256",
        "typ": "at+jwt",
        "kid": g.kid,
        "x5c": [base64.b64encode(der).decode()],
    }
    return es256(a, header, g.valid_claims())


def _kid(kid: object) -> Forge:
    """Valid claims signed with the REAL key under a header naming ``kid`` (a callable gets
    the genuine token and returns the value): only the handling of ``kid`` can reject it."""

    def forge(g: Genuine, _a: ec.EllipticCurvePrivateKey, _s: KeyServer) -> str:
        value = kid(g) if callable(kid) else kid
        return es256(g.real_key, {**g.header, "kid": value}, g.valid_claims())

    return forge


def _der_signature(g: Genuine, _a: ec.EllipticCurvePrivateKey, _s: KeyServer) -> str:
    """The genuine signature of the genuine signing input, re-encoded from JWS raw ``r||s``
    to ASN.1 DER (what OpenSSL produces): valid ECDSA, invalid JWS (RFC 7518 §3.4)."""
    raw = b64url_decode(g.segments[2])
    assert len(raw) == 64
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    return f"{g.segments[0]}.{g.segments[1]}.{b64url(der)}"


def _changed_payload(g: Genuine, _a: ec.EllipticCurvePrivateKey, _s: KeyServer) -> str:
    other = "00000000-0000-0000-0000-000000000000"
    return f"{g.segments[0]}.{b64json({**g.claims, 'sub': other})}.{g.segments[2]}"


def _real_key(header: JsonObject | None = None, **claims: object) -> Forge:
    """Signed with the REAL key: only the header or claim check under test can reject it.
    A header value of None removes that parameter; a callable claim gets ``now``."""

    def forge(g: Genuine, _a: ec.EllipticCurvePrivateKey, _s: KeyServer) -> str:
        now = int(time.time())
        resolved = {k: v(now) if callable(v) else v for k, v in claims.items()}
        merged = {k: v for k, v in {**g.header, **(header or {})}.items() if v is not None}
        return es256(g.real_key, merged, g.valid_claims(**resolved))

    return forge


def _real_key_payload(payload: bytes) -> Forge:
    """A raw (malformed) payload signed with the REAL key."""

    def forge(g: Genuine, _a: ec.EllipticCurvePrivateKey, _s: KeyServer) -> str:
        signing_input = f"{g.segments[0]}.{b64url(payload)}"
        return f"{signing_input}.{b64url(es256_signature(g.real_key, signing_input))}"

    return forge


def _raw(header: Callable[[Genuine], bytes], payload: Callable[[Genuine], bytes]) -> Forge:
    """Raw header and payload bytes (a callable gets the genuine token), signed with the REAL
    key: only the parsing of these bytes can reject the token. Kept under the 4 KB token
    cap, so that its size is not what rejects it."""

    def forge(g: Genuine, _a: ec.EllipticCurvePrivateKey, _s: KeyServer) -> str:
        signing_input = f"{b64url(header(g))}.{b64url(payload(g))}"
        token = f"{signing_input}.{b64url(es256_signature(g.real_key, signing_input))}"
        assert len(token) <= 4096, len(token)
        return token

    return forge


def _header_with(extra: str) -> Callable[[Genuine], bytes]:
    def header(g: Genuine) -> bytes:
        return json.dumps(g.header, separators=(",", ":")).encode()[:-1] + extra.encode() + b"}"

    return header


def _claims_with(extra: str) -> Callable[[Genuine], bytes]:
    def payload(g: Genuine) -> bytes:
        claims = json.dumps(g.valid_claims(), separators=(",", ":")).encode()
        return claims[:-1] + extra.encode() + b"}"

    return payload


def _genuine_header(g: Genuine) -> bytes:
    return json.dumps(g.header, separators=(",", ":")).encode()


def _genuine_claims(g: Genuine) -> bytes:
    return json.dumps(g.valid_claims(), separators=(",", ":")).encode()


def _lifetime(seconds_over: int, *, issued_ago: int = 0) -> Forge:
    """Signed with the REAL key, living ``seconds_over`` longer than the genuine token's
    lifetime (the issuer's ``ACCESS_TOKEN_TTL_SECONDS``), issued ``issued_ago`` seconds ago."""

    def forge(g: Genuine, _a: ec.EllipticCurvePrivateKey, _s: KeyServer) -> str:
        iat = int(time.time()) - issued_ago
        lifetime = int(g.claims["exp"]) - int(g.claims["iat"])
        return es256(
            g.real_key, g.header, g.valid_claims(iat=iat, exp=iat + lifetime + seconds_over)
        )

    return forge


def _without(claim: str) -> Forge:
    def forge(g: Genuine, _a: ec.EllipticCurvePrivateKey, _s: KeyServer) -> str:
        claims = g.valid_claims()
        del claims[claim]
        return es256(g.real_key, g.header, claims)

    return forge


FORGERIES: dict[str, Forge] = {
    # RFC 8725 §2.1/§3.1: the algorithm comes from the key, never from the token.
    "alg none, no signature": _alg_none("none", keep_signature=False),
    "alg none, genuine signature": _alg_none("none", keep_signature=True),
    "alg nOnE, no signature": _alg_none("nOnE", keep_signature=False),
    "hs256 keyed with the public key as PEM": _hs256_public_pem,
    "hs256 keyed with the public key as JWK JSON": _hs256_public_jwk,
    "attacker ES256 key under the real kid": _attacker_key_real_kid,
    # RFC 8725 §3.10 / RFC 7515 §4.1.2-6: never take a key from the token.
    "embedded jwk, self-signed, real kid": _embedded_jwk(with_kid=True),
    "embedded jwk, self-signed, no kid": _embedded_jwk(with_kid=False),
    "jku to the attacker's JWKS, attacker kid": _key_url("jku", "/jwks.json", real_kid=False),
    "jku to the attacker's JWKS, real kid": _key_url("jku", "/jwks.json", real_kid=True),
    "x5u to the attacker's certificate": _key_url("x5u", "/cert.pem", real_kid=True),
    "x5c with the attacker's certificate": _x5c,
    # kid is a lookup key, never a path, a query or a buffer (signed with the real key, so a
    # verifier that found the real key through any of these would accept the token).
    "kid path traversal": _kid("../../../../../../etc/passwd"),
    "kid path traversal to the key file": _kid(lambda g: f"../keys/{g.kid}.json"),
    "kid sql injection": _kid("' OR '1'='1' --"),
    "kid 10 KB of junk": _kid(secrets.token_urlsafe(7680)),
    "kid 2 KB of junk, token under the size cap": _kid(secrets.token_urlsafe(1536)),
    "kid with a NUL and newlines": _kid("key\u0000\r\nSet-Cookie: x=1"),
    "kid not a string": _kid(12345),
    # The signature is over exactly these bytes, in exactly the JWS encoding.
    "DER-encoded signature of the genuine input": _der_signature,
    "changed payload, old signature": _changed_payload,
    "genuine token with the signature cut": lambda g, _a, _s: f"{g.segments[0]}.{g.segments[1]}.",
    "five segments (JWE-shaped)": lambda g, _a, _s: f"{g.token}.AAAA.AAAA",
    # Signed by the real key: the claim and header checks alone must reject these.
    "expired (real key)": _real_key(
        exp=lambda now: now - LEEWAY_SECONDS - 3600, iat=lambda now: now - 7200
    ),
    "not yet valid, nbf past the leeway (real key)": _real_key(
        nbf=lambda now: now + LEEWAY_SECONDS + 240
    ),
    "issued in the future (real key)": _real_key(
        iat=lambda now: now + LEEWAY_SECONDS + 240, exp=lambda now: now + 3600
    ),
    "wrong audience (real key)": _real_key(aud="another-api"),
    "wrong audience list (real key)": _real_key(aud=["another-api", "bulwark-apix"]),
    "wrong issuer (real key)": _real_key(iss="https://evil.example"),
    "typ JWT (real key)": _real_key({"typ": "JWT"}),
    "no typ (real key)": _real_key({"typ": None}),
    "crit with an unknown header (real key)": _real_key(
        {"crit": ["urn:example:unknown"], "urn:example:unknown": True}
    ),
    "crit naming exp (real key)": _real_key({"crit": ["exp"]}),
    "claims are a JSON array (real key)": _real_key_payload(b"[]"),
    "claims are not JSON (real key)": _real_key_payload(b"\xff\xfe not json"),
    "exp is a string (real key)": _real_key(exp="9999999999"),
    "no exp (real key)": _without("exp"),
    "no sub (real key)": _without("sub"),
    "no sid (real key)": _without("sid"),
    # Parsers meet a token before its signature is known (issue 9): a deep or huge header
    # or claim is a 401, never a RecursionError answered 500.
    "header nesting 1000 arrays (real key)": _raw(
        _header_with(',"x":' + "[" * 1000 + "]" * 1000), _genuine_claims
    ),
    "header nesting 1000 objects (real key)": _raw(
        _header_with(',"x":' + '{"a":' * 400 + "1" + "}" * 400), _genuine_claims
    ),
    "header of 2000 open brackets": lambda g, _a, _s: (
        f"{b64url(b'[' * 2000)}.{g.segments[1]}.{g.segments[2]}"
    ),
    "claim nesting 1000 arrays (real key)": _raw(
        _genuine_header, _claims_with(',"x":' + "[" * 1000 + "]" * 1000)
    ),
    "claim nesting 20 arrays (real key)": _raw(
        _genuine_header, _claims_with(',"x":' + "[" * 20 + "]" * 20)
    ),
    "claims of 2000 open brackets (real key)": _raw(_genuine_header, lambda _g: b"[" * 2000),
    "claim array of 500 numbers (real key)": _raw(
        _genuine_header, _claims_with(',"x":[' + ",".join(["0"] * 500) + "]")
    ),
    "claim number of 1000 digits (real key)": _raw(
        _genuine_header, _claims_with(',"x":' + "9" * 1000)
    ),
    "claim 1e999999 (real key)": _raw(_genuine_header, _claims_with(',"x":1e999999')),
    "exp NaN (real key)": _raw(_genuine_header, _claims_with(',"exp":NaN')),
    "claim with a lone surrogate (real key)": _raw(_genuine_header, _claims_with(',"x":"\\udc00"')),
    "claims not UTF-8 (real key)": _raw(
        _genuine_header, lambda g: _genuine_claims(g)[:-1] + b',"x":"\xff"}'
    ),
    "claims with a BOM (real key)": _raw(
        _genuine_header, lambda g: b"\xef\xbb\xbf" + _genuine_claims(g)
    ),
    "sub given twice (real key)": _raw(
        _genuine_header, _claims_with(',"sub":"00000000-0000-0000-0000-000000000000"')
    ),
    "typ given twice (real key)": _raw(_header_with(',"typ":"JWT"'), _genuine_claims),
    "header base64 with padding (real key)": lambda g, _a, _s: (
        f"{b64url(_genuine_header(g))}==.{g.segments[1]}.{g.segments[2]}"
    ),
    # The verifier accepts no lifetime longer than the issuer's (issue 9): a leaked key
    # cannot mint tokens that outlast its rotation.
    "valid for a year (real key)": _lifetime(365 * 86400),
    "valid for a day (real key)": _lifetime(86400),
    "lifetime one second past the leeway (real key)": _lifetime(LEEWAY_SECONDS + 1),
    "issued a month ago, expiring in a minute (real key)": _lifetime(
        30 * 86400, issued_ago=30 * 86400 - 60
    ),
}


def assert_401_problem(response: httpx.Response, case: str) -> None:
    assert response.status_code == 401, (case, response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM_JSON), case
    body = response.json()
    assert body["status"] == 401, case
    assert body["request_id"], case
    assert response.headers["www-authenticate"].startswith("Bearer"), case


def test_a_token_signed_here_with_the_real_key_is_accepted(
    stack: RunningStack, genuine: Genuine
) -> None:
    """The control: the test's signer and key are right, so the real-key cases below fail
    only on the check each one targets."""
    for token in (genuine.token, es256(genuine.real_key, genuine.header, genuine.valid_claims())):
        response = httpx.get(f"{stack.api_url}/v1/me", headers=bearer(token, genuine.user))
        assert response.status_code == 200, response.text
        assert response.json()["id"] == genuine.user.user_id


@pytest.mark.parametrize("case", list(FORGERIES))
def test_forged_token_is_401_problem_json(
    stack: RunningStack,
    genuine: Genuine,
    attacker: ec.EllipticCurvePrivateKey,
    key_server: KeyServer,
    case: str,
) -> None:
    forged = FORGERIES[case](genuine, attacker, key_server)
    response = httpx.get(f"{stack.api_url}/v1/me", headers=bearer(forged, genuine.user))
    assert_401_problem(response, case)
    assert key_server.hits == [], f"{case}: the API fetched {key_server.hits}"


@pytest.mark.parametrize("case", list(FORGERIES))
def test_forged_token_is_401_problem_json_at_the_auth_service(
    stack: RunningStack,
    genuine: Genuine,
    attacker: ec.EllipticCurvePrivateKey,
    key_server: KeyServer,
    case: str,
) -> None:
    """The auth service verifies access tokens too (logout, sessions): the same forgeries
    get the same answer there."""
    forged = FORGERIES[case](genuine, attacker, key_server)
    response = httpx.get(f"{stack.auth_url}/v1/auth/sessions", headers=bearer(forged, genuine.user))
    assert_401_problem(response, case)
    assert key_server.hits == [], f"{case}: the auth service fetched {key_server.hits}"


def test_a_token_just_inside_the_lifetime_and_leeway_is_accepted(
    stack: RunningStack,
    genuine: Genuine,
    attacker: ec.EllipticCurvePrivateKey,
    key_server: KeyServer,
) -> None:
    """The control of the lifetime cases: the issuer's lifetime plus the leeway is allowed."""
    token = _lifetime(LEEWAY_SECONDS)(genuine, attacker, key_server)
    for url in (f"{stack.api_url}/v1/me", f"{stack.auth_url}/v1/auth/sessions"):
        response = httpx.get(url, headers=bearer(token, genuine.user))
        assert response.status_code == 200, response.text


@pytest.mark.security(stride="I", asvs=("V14.2",))
def test_token_in_the_query_string_is_401_even_when_genuine(
    stack: RunningStack, genuine: Genuine
) -> None:
    response = httpx.get(
        f"{stack.api_url}/v1/me",
        params={"access_token": genuine.token},
        headers=genuine.user.headers,
    )
    assert_401_problem(response, "query string")
    # Both places at once: still refused, the header does not rescue the query parameter.
    both = httpx.get(
        f"{stack.api_url}/v1/me",
        params={"access_token": genuine.token},
        headers=bearer(genuine.token, genuine.user),
    )
    assert_401_problem(both, "query string and header")


# --- unknown kid flood --------------------------------------------------------------------

FLOOD_REQUESTS = 1000
JWKS_COOLDOWN_SECONDS = 5  # the flood stack's JWKS_MIN_REFRESH_SECONDS (default 30)
JWKS_ROUTE = "/.well-known/jwks.json"


def jwks_requests(log: str) -> int:
    """How many ``GET /.well-known/jwks.json`` the auth service's access log records."""
    count = 0
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        count += entry.get("event") == "request" and entry.get("route") == JWKS_ROUTE
    return count


def api_rejections(log: str, reason: str) -> int:
    """How many ``access_token_rejected`` lines with ``reason`` the API's log records."""
    count = 0
    for line in log.splitlines():
        if line.startswith("{") and '"access_token_rejected"' in line:
            count += json.loads(line).get("reason") == reason
    return count


@pytest.mark.security(stride="D", asvs=("V9.1",))
def test_a_flood_of_unknown_kids_costs_one_jwks_fetch_per_cooldown(
    stack_factory: StackFactory, tmp_path: Path, attacker: ec.EllipticCurvePrivateKey
) -> None:
    """Two waves of 1000 concurrent requests with one unknown ``kid``, the first after the
    API's refetch cooldown has run out: the callers of the first wave share one JWKS fetch
    (single flight), the second wave, within the cooldown, causes none; every caller gets
    a 401 problem. The JWKS fetches are counted in the auth service's access log."""
    rules = tmp_path / "rules.yaml"
    # The API's limits raised so that a thousand requests from 127.0.0.1 are all answered
    # by the verifier, not by the limiter.
    rules.write_text(packaged_rules_with_raised_limits(domains=frozenset({"bulwark-api"})))
    flood_stack = stack_factory(
        env={
            "ratelimit": {"RATELIMIT_RULES": str(rules)},
            # Every request of a wave in flight at once: the waves test the JWKS cache, not
            # the admission control (HTTP_MAX_CONCURRENCY) that would shed part of them.
            "api": {
                "JWKS_MIN_REFRESH_SECONDS": str(JWKS_COOLDOWN_SECONDS),
                "HTTP_MAX_CONCURRENCY": str(2 * FLOOD_REQUESTS),
            },
        }
    )
    ready_at = time.monotonic()  # the API fetched the JWKS for /readyz just before
    user = register(flood_stack.auth_url)
    token = str(login(flood_stack.auth_url, user)["access_token"])
    claims = json.loads(b64url_decode(token.split(".")[1]))
    forged = es256(
        attacker,
        {"alg": "ES256", "typ": "at+jwt", "kid": f"unknown-{secrets.token_hex(8)}"},
        claims,
    )
    url, headers = f"{flood_stack.api_url}/v1/me", bearer(forged, user)
    time.sleep(max(0.0, ready_at + JWKS_COOLDOWN_SECONDS + 0.5 - time.monotonic()))

    counts = [jwks_requests(flood_stack.log("auth"))]
    started = time.monotonic()
    for wave in range(2):
        responses = asyncio.run(flood(url, headers))
        if wave == 0:
            first_wave = time.monotonic() - started
        assert {r.status_code for r in responses} == {401}
        assert all(r.headers["content-type"].startswith(PROBLEM_JSON) for r in responses)
        time.sleep(0.3)  # the auth process writes its access line after answering
        counts.append(jwks_requests(flood_stack.log("auth")))
    elapsed = time.monotonic() - started

    first, second = counts[1] - counts[0], counts[2] - counts[1]
    # One fetch per cooldown: a first wave that outlasts the cooldown (a loaded machine takes
    # more than 5 s for 1000 requests) may refetch once more per cooldown, never per request.
    most = 1 + int(first_wave // JWKS_COOLDOWN_SECONDS)
    assert 1 <= first <= most, f"first wave: {first} JWKS fetches in {first_wave:.1f} s"
    if elapsed < JWKS_COOLDOWN_SECONDS:  # on a very slow machine the cooldown may run out
        assert second == 0, f"second wave, within the cooldown: {second} JWKS fetches"
    assert api_rejections(flood_stack.log("api"), "unknown kid") == 2 * FLOOD_REQUESTS


async def flood(url: str, headers: dict[str, str]) -> list[httpx.Response]:
    """``FLOOD_REQUESTS`` concurrent GETs, each on its own connection, within 20 s."""
    limits = httpx.Limits(max_connections=FLOOD_REQUESTS, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=15.0) as client:
        calls = (client.get(url, headers=headers) for _ in range(FLOOD_REQUESTS))
        return await asyncio.wait_for(asyncio.gather(*calls), timeout=20.0)
