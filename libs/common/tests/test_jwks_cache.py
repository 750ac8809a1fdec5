"""The JWKS cache: Cache-Control lifetimes, single-flight refetch on unknown kid with a
cooldown, and the last good key set kept while the auth service is down.

The auth service's endpoint is played by httpx.MockTransport (no sockets); the clock is
a fake so lifetimes are exact.
"""

import asyncio

import httpx
import pytest
from joserfc.jwk import ECKey

from bulwark.common.access_tokens import JwksCache, JwksUnavailable
from bulwark.common.revocations import entry_lifetime, revoked_key_lifetime

pytestmark = pytest.mark.security(stride="SD", asvs=("V9.1",))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class AuthServer:
    """Serves a JWKS document; counts fetches; can be taken down."""

    def __init__(self) -> None:
        self.keys = [self._key()]
        self.fetches = 0
        self.down = False
        self.max_age = 300

    @staticmethod
    def _key() -> ECKey:
        return ECKey.generate_key("P-256", parameters={"alg": "ES256"}, auto_kid=True)

    def rotate(self) -> ECKey:
        key = self._key()
        self.keys.append(key)
        return key

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        await asyncio.sleep(0.01)  # concurrent callers pile up behind one fetch
        if self.down:
            return httpx.Response(503)
        document = {"keys": [dict(key.as_dict(private=False)) for key in self.keys]}
        return httpx.Response(
            200, json=document, headers={"Cache-Control": f"public, max-age={self.max_age}"}
        )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server() -> AuthServer:
    return AuthServer()


@pytest.fixture
def cache(server: AuthServer, clock: Clock) -> JwksCache:
    client = httpx.AsyncClient(transport=httpx.MockTransport(server.handle))
    return JwksCache("http://auth/.well-known/jwks.json", client=client, clock=clock)


async def test_a_thousand_requests_with_an_unknown_kid_cause_one_fetch(
    clock: Clock, server: AuthServer, cache: JwksCache
) -> None:
    known = str(server.keys[0].kid)
    assert await cache.get(known) is not None
    assert server.fetches == 1
    results = await asyncio.gather(*(cache.get("unknown-kid") for _ in range(1000)))
    assert results == [None] * 1000
    assert server.fetches == 1  # still inside the cooldown of the first fetch
    clock.now += 31
    await asyncio.gather(*(cache.get("unknown-kid") for _ in range(1000)))
    assert server.fetches == 2  # one refetch per cooldown, shared by all callers


async def test_a_new_key_is_found_by_refetch_after_the_cooldown(
    clock: Clock, server: AuthServer, cache: JwksCache
) -> None:
    await cache.get(str(server.keys[0].kid))
    new = server.rotate()
    clock.now += 31
    assert await cache.get(str(new.kid)) is not None
    assert server.fetches == 2


async def test_cache_control_max_age_sets_the_lifetime(
    clock: Clock, server: AuthServer, cache: JwksCache
) -> None:
    kid = str(server.keys[0].kid)
    await cache.get(kid)
    clock.now += 299
    await cache.get(kid)
    assert server.fetches == 1
    clock.now += 2
    await cache.get(kid)
    assert server.fetches == 2


async def test_the_last_good_set_keeps_serving_while_auth_is_down(
    clock: Clock, server: AuthServer, cache: JwksCache
) -> None:
    kid = str(server.keys[0].kid)
    await cache.get(kid)
    server.down = True
    clock.now += 301
    assert await cache.get(kid) is not None  # stale but served
    fetches = server.fetches
    for _ in range(100):
        assert await cache.get(kid) is not None
    assert server.fetches == fetches  # backing off, not one fetch per request
    clock.now += 3600 + 3600
    with pytest.raises(JwksUnavailable):
        await cache.get(kid)  # too old to trust any more


async def test_no_key_set_at_all_is_unavailable(server: AuthServer, cache: JwksCache) -> None:
    server.down = True
    with pytest.raises(JwksUnavailable):
        await cache.get("any")
    assert not await cache.ready()


async def test_private_parts_and_foreign_algorithms_are_ignored(clock: Clock) -> None:
    private = ECKey.generate_key("P-256", parameters={"alg": "ES256", "kid": "private"})
    hmac = {"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "kid": "hmac"}

    async def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"keys": [dict(private.as_dict(private=True)), hmac]})

    cache = JwksCache(
        "http://auth/jwks", client=httpx.AsyncClient(transport=httpx.MockTransport(handle))
    )
    assert await cache.get("private") is None
    assert await cache.get("hmac") is None


@pytest.mark.parametrize(
    "content",
    [b"[" * 5000, b'{"keys": [' + b"[" * 2000 + b"]" * 2000 + b"]}", b'{"keys": [], "keys": []}'],
)
async def test_a_hostile_jwks_document_is_a_failed_fetch(clock: Clock, content: bytes) -> None:
    """A deep or ambiguous document (a JWKS URL pointing somewhere hostile) is a failed fetch
    that keeps the last good set, never a RecursionError in every request."""
    server = AuthServer()
    hostile = False

    async def handle(request: httpx.Request) -> httpx.Response:
        if hostile:
            return httpx.Response(200, content=content, headers={"Cache-Control": "max-age=30"})
        return await server.handle(request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    cache = JwksCache("http://auth/.well-known/jwks.json", client=client, clock=clock)
    kid = str(server.keys[0].kid)
    assert await cache.get(kid) is not None
    hostile = True
    clock.now += 301
    assert await cache.get(kid) is not None  # the last good set, stale but served
    assert await cache.get("unknown") is None


async def test_a_removed_key_is_listed_for_as_long_as_a_cache_can_serve_it(
    clock: Clock, server: AuthServer, cache: JwksCache
) -> None:
    """A key fetched just before it was removed, with the auth service unreachable after (so
    the stale set keeps serving), must stay listed as revoked until no cache serves it: the
    listing is all that refuses a compromised key's forged tokens meanwhile."""
    server.max_age = 86400  # the longest JWKS_MAX_AGE_SECONDS the auth service allows
    kid = str(server.keys[0].kid)
    assert await cache.get(kid) is not None
    server.down = True
    served_for = 0.0
    while served_for < 10 * 86400:
        clock.now += 60
        try:
            key = await cache.get(kid)
        except JwksUnavailable:
            break
        assert key is not None
        served_for += 60
    assert 0 < served_for < 10 * 86400
    assert served_for > entry_lifetime(900)  # a listing of one token lifetime is too short
    assert revoked_key_lifetime(900) > served_for
