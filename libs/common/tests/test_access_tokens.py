"""The access-token verifier against a local key source: every rule of RFC 9068 and
RFC 8725 that Bulwark relies on, and forgeries rejected."""

import asyncio
import base64
import json
import sys
import time
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from bulwark.common.access_tokens import (
    LEEWAY_SECONDS,
    MAX_TOKEN_BYTES,
    AccessTokenClaims,
    AccessTokenVerifier,
    InvalidAccessToken,
)

pytestmark = pytest.mark.security(stride="SE", asvs=("V9.1", "V9.2"))

ISSUER, AUDIENCE = "https://auth.example", "bulwark-api"
LIFETIME = 900


class Keys:
    def __init__(self, *keys: ECKey | RSAKey) -> None:
        self.keys = {str(key.kid): key for key in keys}
        self.lookups = 0

    async def get(self, kid: str) -> ECKey | RSAKey | None:
        self.lookups += 1
        return self.keys.get(kid)


USER = "3f2a5c1e-9b7d-4e21-8c3a-0d6f5e4b3a21"
SESSION = "8a6c2f1e-1d2c-4b3a-9e8f-7a6b5c4d3e2f"


def _key() -> ECKey:
    return ECKey.generate_key("P-256", parameters={"alg": "ES256"}, auto_kid=True)


def _claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": USER,
        "client_id": "app",
        "iat": now,
        "exp": now + 900,
        "jti": "j",
        "sid": SESSION,
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
    return AccessTokenVerifier(Keys(key), issuer=ISSUER, audience=AUDIENCE, max_lifetime=LIFETIME)


async def test_a_genuine_token_verifies(key: ECKey, verifier: AccessTokenVerifier) -> None:
    claims = await verifier.verify(_sign(key, _claims()))
    assert claims.sub == USER
    assert claims.sid == SESSION


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
        # Signed, but not the shape Bulwark's issuer writes: the routes parse these as UUIDs.
        {"sub": "not-a-uuid"},
        {"sub": USER.upper()},
        {"sub": USER + "\n"},
        {"sub": "\u0000"},
        {"sid": "not-a-uuid"},
        {"sid": "{" + SESSION + "}"},
        {"client_id": "c" * 1025},
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


# --- hostile tokens: each is InvalidAccessToken (a 401), never another exception --------


def _b64raw(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _sign_raw(key: ECKey, header: bytes, payload: bytes) -> str:
    """A compact JWS over these exact header and payload bytes, validly signed (ES256)."""
    signing_input = f"{_b64raw(header)}.{_b64raw(payload)}"
    der = key.private_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{signing_input}.{_b64raw(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _header_bytes(key: ECKey, extra: str = "") -> bytes:
    return f'{{"alg":"ES256","typ":"at+jwt","kid":"{key.kid}"{extra}}}'.encode()


def _claims_bytes(extra: str = "", **overrides: object) -> bytes:
    return json.dumps(_claims(**overrides)).encode()[:-1] + extra.encode() + b"}"


async def test_the_raw_signer_makes_tokens_that_verify(
    key: ECKey, verifier: AccessTokenVerifier
) -> None:
    """The control for the cases below: only the part under test can make them fail."""
    assert (await verifier.verify(_sign_raw(key, _header_bytes(key), _claims_bytes()))).sub


@pytest.mark.parametrize("depth", [5, 100, 1000, 1300])
async def test_a_deeply_nested_header_is_invalid(
    key: ECKey, verifier: AccessTokenVerifier, depth: int
) -> None:
    header = _header_bytes(key, ',"x":' + "[" * depth + "]" * depth)
    token = _sign_raw(key, header, _claims_bytes())
    assert len(token) <= MAX_TOKEN_BYTES  # refused for its depth, not its size
    with pytest.raises(InvalidAccessToken):
        await verifier.verify(token)
    only_open = f"{_b64raw(b'[' * depth)}.{_b64raw(_claims_bytes())}.sig"
    with pytest.raises(InvalidAccessToken):
        await verifier.verify(only_open)


@pytest.mark.parametrize("depth", [5, 100, 1000, 1200])
async def test_a_validly_signed_deeply_nested_claim_is_invalid(
    key: ECKey, verifier: AccessTokenVerifier, depth: int
) -> None:
    payload = _claims_bytes(',"x":' + "[" * depth + "]" * depth)
    token = _sign_raw(key, _header_bytes(key), payload)
    assert len(token) <= MAX_TOKEN_BYTES
    with pytest.raises(InvalidAccessToken):
        await verifier.verify(token)


@pytest.mark.parametrize(
    "extra",
    [
        ',"x":[' + ",".join(["0"] * 300) + "]",  # too many values
        ',"x":' + "9" * 1000,  # a number too long
        ',"x":1e999999',  # a number that overflows
        ',"x":NaN',
        ',"sub":"admin"',  # a claim given twice: which one would a proxy read?
        ',"x":"\\ud800"',  # a lone surrogate
    ],
)
async def test_validly_signed_claims_beyond_the_limits_are_invalid(
    key: ECKey, verifier: AccessTokenVerifier, extra: str
) -> None:
    payload = _claims_bytes(extra)
    with pytest.raises(InvalidAccessToken):
        await verifier.verify(_sign_raw(key, _header_bytes(key), payload))


async def test_a_header_member_given_twice_is_invalid(
    key: ECKey, verifier: AccessTokenVerifier
) -> None:
    header = _header_bytes(key, ',"typ":"JWT"')
    with pytest.raises(InvalidAccessToken):
        await verifier.verify(_sign_raw(key, header, _claims_bytes()))


@pytest.mark.parametrize(
    "segment",
    ["eyJ9", "e", "eyJhbGciOiJFUzI1NiJ9=", "eyJhbGci+iJFUzI1NiJ9", "eyJhbGcé", " eyJ9"],
)
async def test_a_header_that_is_not_strict_base64url_is_invalid(
    verifier: AccessTokenVerifier, segment: str
) -> None:
    with pytest.raises(InvalidAccessToken):
        await verifier.verify(f"{segment}.{_b64raw(_claims_bytes())}.sig")


# --- lifetime ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lifetime", "accepted"),
    [
        (LIFETIME, True),
        (LIFETIME + LEEWAY_SECONDS, True),
        (LIFETIME + LEEWAY_SECONDS + 1, False),
        (86400, False),
        (365 * 86400, False),
    ],
)
async def test_a_token_may_not_live_longer_than_the_issuers_lifetime(
    key: ECKey, verifier: AccessTokenVerifier, lifetime: int, accepted: bool
) -> None:
    now = int(time.time())
    token = _sign(key, _claims(iat=now, exp=now + lifetime))
    if accepted:
        assert (await verifier.verify(token)).exp == now + lifetime
    else:
        with pytest.raises(InvalidAccessToken, match="lifetime"):
            await verifier.verify(token)


async def test_a_backdated_long_lived_token_is_invalid_too(
    key: ECKey, verifier: AccessTokenVerifier
) -> None:
    """``iat`` far in the past, ``exp`` still ahead: a minted long-lived token, not a fresh
    one, whatever the time left."""
    now = int(time.time())
    with pytest.raises(InvalidAccessToken, match="lifetime"):
        await verifier.verify(_sign(key, _claims(iat=now - 30 * 86400, exp=now + 60)))


async def test_a_token_issued_in_the_future_is_invalid(
    key: ECKey, verifier: AccessTokenVerifier
) -> None:
    now = int(time.time())
    await verifier.verify(_sign(key, _claims(iat=now + 30, exp=now + 30 + LIFETIME)))
    with pytest.raises(InvalidAccessToken):
        await verifier.verify(_sign(key, _claims(iat=now + 120, exp=now + 120 + LIFETIME)))


def test_the_lifetime_is_required_where_a_verifier_is_made() -> None:
    with pytest.raises(TypeError):
        AccessTokenVerifier(Keys(), issuer=ISSUER, audience=AUDIENCE)  # type: ignore[call-arg]


# --- fuzz: whatever the bytes, a claims object or InvalidAccessToken ----------------------

FUZZ = settings(max_examples=150, deadline=timedelta(seconds=2))
_FUZZ_KEY = _key()
_FUZZ_VERIFIER = AccessTokenVerifier(
    Keys(_FUZZ_KEY), issuer=ISSUER, audience=AUDIENCE, max_lifetime=LIFETIME
)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
#: Nesting depths: shallow, and around the interpreter's recursion limit (1000), where a
#: recursive parser fails, yet within the 4 KB a token may have.
DEPTHS = st.integers(0, 40) | st.integers(900, 1300)
#: JSON texts, valid or not, shaped like the attacks: deep, wide, huge numbers, broken text.
HOSTILE_JSON = st.one_of(
    _JSON.map(json.dumps),
    st.builds(
        lambda depth, inner: "[" * depth + inner + "]" * depth,
        DEPTHS,
        st.sampled_from(["", "0", '"x"', "{}", '{"a":[']),
    ),
    st.builds(lambda depth: '{"a":' * depth + "1" + "}" * depth, st.integers(0, 600)),
    st.builds(lambda depth: "[" * depth, DEPTHS),
    st.builds(lambda n: "[" + ",".join(["0"] * n) + "]", st.integers(0, 1500)),
    st.sampled_from(
        [
            "1e999999",
            "-1e999999",
            "NaN",
            "-Infinity",
            "9" * 1000,
            '"\\ud800"',
            "\ufeff{}",
            "{} x",
            '{"a":1,"a":2}',
            '"\\',
            '"' + '\\"[' * 600,
        ]
    ),
    st.text(max_size=200),
)


def _verify(token: str) -> AccessTokenClaims | None:
    """The claims, or None when the token is invalid; any other exception fails the test.

    Run under the interpreter's default recursion limit, as in a server: hypothesis raises
    the limit while a test runs, which would hide a recursive parser's failure."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        return asyncio.run(_FUZZ_VERIFIER.verify(token))
    except InvalidAccessToken:
        return None
    finally:
        sys.setrecursionlimit(limit)


@FUZZ
@given(st.text(max_size=300) | st.from_regex(r"[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*"))
def test_fuzz_any_string_is_invalid_or_verifies(token: str) -> None:
    assert _verify(token) is None


@FUZZ
@given(header=HOSTILE_JSON, claims=HOSTILE_JSON)
def test_fuzz_hostile_header_and_claims_are_invalid(header: str, claims: str) -> None:
    encoded = [_b64raw(part.encode("utf-8", "surrogatepass")) for part in (header, claims)]
    assert _verify(f"{encoded[0]}.{encoded[1]}.c2ln") is None


@FUZZ
@given(header_extra=HOSTILE_JSON, claim=HOSTILE_JSON)
def test_fuzz_validly_signed_hostile_members_are_invalid_or_verify(
    header_extra: str, claim: str
) -> None:
    raw = lambda text: text.encode("utf-8", "surrogatepass")  # noqa: E731
    header = _header_bytes(_FUZZ_KEY, ',"x":' + header_extra) if header_extra else None
    token = _sign_raw(
        _FUZZ_KEY,
        header if header is not None else _header_bytes(_FUZZ_KEY),
        _claims_bytes()[:-1] + b',"x":' + raw(claim) + b"}",
    )
    verified = _verify(token)
    assert verified is None or verified.sub == USER
