"""nginx (Debian's binary, ``make nginx``) as the ingress in front of 3 API, 2 auth and 2
rate-limiter replicas sharing one Postgres and one Redis; every replica is a real process.

Routes as in production (``ingress/nginx.conf``): ``/v1/users``, ``/v1/auth/*``,
``/oauth2/*`` and ``/.well-known/*`` to auth, the rest of ``/v1/*`` to the API. nginx connects
from 127.0.0.2, the only address the services trust (``TRUSTED_PROXIES``), and appends the
client to ``X-Forwarded-For``.

Each auth and API replica names one rate limiter (``RATELIMIT_TARGET``): those of the first
stack the first limiter, those of the second the second, the third API replica the first.
In production each replica spreads its calls over every limiter (a headless Service and
gRPC round robin, services/ratelimit/tests/test_replicas.py); here each is pinned so that
the login-limit test can fail: its attempts alternate between the auth replicas, hence
between the limiters, which agree only because they share Redis. (Spread per call, a
login's per-email check can land on the same limiter every time, as it did with nginx
balancing each gRPC call, which was tried first.)

What must hold with any number of replicas: the per-email login limit is exact whichever
replica answers; refresh reuse and logout take effect on every replica at once; a revoked
session is refused by every API replica within a second; and losing an API replica under
load costs no idempotent request, only the non-idempotent ones it held.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from .conftest import RunningStack, StackFactory
from .helpers import MobileUser, bearer, login, new_request_id, refresh, register
from .nginx_ingress import PROXY_ADDRESS, NginxIngress

#: rules.yaml: bulwark-auth, endpoint login, per email (the 6th attempt in 15 minutes is 429).
LOGIN_LIMIT_PER_EMAIL = 5


@dataclass
class Cluster:
    """The ingress and the stacks behind it: ``stacks[0]`` and ``[1]`` run a rate limiter, an
    auth and an API replica each, ``stacks[2]`` a third API replica (using the first
    stack's limiter and JWKS)."""

    ingress: NginxIngress
    stacks: list[RunningStack]

    @property
    def url(self) -> str:
        """Base URL of the ingress."""
        return self.ingress.url

    def api_urls(self) -> list[str]:
        """Each API replica's own URL (not through the ingress)."""
        return [stack.api_url for stack in self.stacks]


@pytest.fixture(scope="module")
def cluster(
    stack_factory: StackFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Start the replicas, then nginx in front of them; stop all at the end of the module."""
    keys = tmp_path_factory.mktemp("ingress-keys")
    prefix = f"rl:test:{secrets.token_hex(4)}:"  # shared: one set of limits, one revoked set
    ingress = NginxIngress()  # its ports are known now; it starts once the replicas are up
    behind = {"ISSUER": ingress.url, "TRUSTED_PROXIES": PROXY_ADDRESS}  # one issuer for all
    first = stack_factory(
        keys_dir=keys, redis_key_prefix=prefix, env={"auth": behind, "api": behind}
    )
    second = stack_factory(
        databases=first.databases,
        keys_dir=keys,
        redis_key_prefix=prefix,
        env={"auth": behind, "api": behind},
    )
    third = stack_factory(
        services=("api",),
        databases=first.databases,
        keys_dir=keys,
        redis_key_prefix=prefix,
        env={
            "api": {
                **behind,
                "JWKS_URL": f"{first.auth_url}/.well-known/jwks.json",
                "RATELIMIT_TARGET": first.ratelimit_target,
            }
        },
    )
    stacks = [first, second, third]
    try:
        ingress.start(
            auth=[_address(s.auth_url) for s in stacks[:2]],
            api=[_address(s.api_url) for s in stacks],
        )
        yield Cluster(ingress, stacks)
    finally:
        ingress.stop()
        for stack in reversed(stacks):
            stack.stack.stop()


def _address(url: str) -> str:
    """``host:port`` of ``http://host:port``, as nginx names an upstream server."""
    return url.removeprefix("http://")


def _upstream(response: httpx.Response) -> str:
    """The replica that answered through the ingress (its test-only ``X-Upstream``)."""
    return response.headers["x-upstream"].split(",")[-1].strip()


@pytest.mark.security(stride="E", asvs=("V13",))
def test_the_ingress_routes_each_path_to_its_service(cluster: Cluster) -> None:
    auth = {_address(s.auth_url) for s in cluster.stacks[:2]}
    api = {_address(s.api_url) for s in cluster.stacks}
    jwks = httpx.get(f"{cluster.url}/.well-known/jwks.json")
    assert jwks.status_code == 200
    assert _upstream(jwks) in auth
    metadata = httpx.get(f"{cluster.url}/.well-known/oauth-authorization-server")
    assert metadata.json()["issuer"] == cluster.url
    me = httpx.get(f"{cluster.url}/v1/me")
    assert me.status_code == 401
    assert _upstream(me) in api
    revoke = httpx.post(f"{cluster.url}/oauth2/revoke", data={"token": "unknown"})
    assert revoke.status_code == 200
    assert _upstream(revoke) in auth
    # Each auth path with or without a tail, as the Kubernetes Ingress's Prefix match routes
    # them; a longer name is the API's.
    paths = ("/v1/users/", "/v1/auth", "/oauth2", "//v1/users", "/signin", "/device", "/account/x")
    for path in paths:
        answer = httpx.get(f"{cluster.url}{path}")
        assert answer.status_code != 301, path  # nginx's own HTML redirect
        assert _upstream(answer) in auth, path
    for path in ("/v1/usersx", "/v1/authx/login"):
        assert _upstream(httpx.get(f"{cluster.url}{path}")) in api, path
    # Health and metrics stay internal.
    assert httpx.get(f"{cluster.url}/healthz").status_code == 404


@pytest.mark.security(stride="I", asvs=("V16.5",))
@pytest.mark.parametrize(
    ("method", "path", "extra", "status"),
    [
        ("TRACE", "/v1/me", {}, 405),
        ("GET", "/x.html", {}, 404),
        ("GET", "/_problems/400", {}, 404),
        ("GET", "/v1/me", {"headers": {"X-Big": "a" * 9000}}, 400),
        ("GET", "/" + "a" * 9000, {}, 414),
        ("POST", "/v1/notes", {"content": b"0" * 2_000_000}, 413),
    ],
)
def test_what_the_ingress_refuses_is_problem_json(
    cluster: Cluster, method: str, path: str, extra: dict[str, object], status: int
) -> None:
    """nginx's own refusals are problem+json like the services', never its HTML page."""
    answer = httpx.request(method, f"{cluster.url}{path}", **extra)  # type: ignore[arg-type]
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["status"] == status
    assert "nginx" not in answer.text


@pytest.mark.security(stride="S", asvs=("V4.1",))
def test_a_client_cannot_choose_its_country_through_the_ingress(cluster: Cluster) -> None:
    """The auth service believes the geo header (``GEO_COUNTRY_HEADER``, CloudFront's by
    default) from the ingress only; an ingress that sets no country must strip the client's,
    or a thief could log in "from" the victim's usual country and dodge the new-country
    flag. nginx strips it: the login is recorded with no country."""
    user = register(cluster.url)
    spoofed = {**user.headers, "CloudFront-Viewer-Country": "KP"}
    body = {"email": user.email, "password": user.password}
    answer = httpx.post(f"{cluster.url}/v1/auth/login", json=body, headers=spoofed)
    assert answer.status_code == 200, answer.text

    async def recorded() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(cluster.stacks[0].databases["auth"], timeout=10)
        try:
            return list(
                await conn.fetch(
                    "SELECT country FROM last_logins WHERE user_id = $1",
                    uuid.UUID(user.user_id),
                )
            )
        finally:
            await conn.close(timeout=10)

    deadline = time.monotonic() + 10
    while not (rows := asyncio.run(recorded())):
        assert time.monotonic() < deadline, "the login was never recorded"
        time.sleep(0.1)
    assert [row["country"] for row in rows] == [None]


@pytest.mark.security(stride="S", asvs=("V4.1",))
def test_only_the_ingress_is_trusted_with_x_forwarded_for(cluster: Cluster) -> None:
    user = register(cluster.url)
    spoofed = {**user.headers, "X-Forwarded-For": "203.0.113.9"}
    through = httpx.post(
        f"{cluster.url}/v1/auth/login",
        json={"email": user.email, "password": user.password},
        headers=spoofed,
    )
    assert through.status_code == 200, through.text
    direct = httpx.post(
        f"{cluster.stacks[0].auth_url}/v1/auth/login",
        json={"email": user.email, "password": user.password},
        headers=spoofed,
    )
    assert direct.status_code == 200, direct.text
    sessions = httpx.get(
        f"{cluster.url}/v1/auth/sessions", headers=bearer(through.json()["access_token"], user)
    ).json()["sessions"]
    # Through the ingress the replica sees 127.0.0.2 and believes nginx's entry, the client's
    # 127.0.0.1, not the one the client wrote; called directly it believes no header at all.
    assert [s["lastIp"] for s in sessions] == ["127.0.0.1", "127.0.0.1"]


@pytest.mark.security(stride="S", asvs=("V2.4", "V6.3"))
def test_the_login_limit_per_email_is_exact_whichever_replica_answers(cluster: Cluster) -> None:
    user = register(cluster.url)
    answers = [
        httpx.post(
            f"{cluster.url}/v1/auth/login",
            json={"email": user.email, "password": user.password},
            headers=user.headers,
        )
        for _ in range(LOGIN_LIMIT_PER_EMAIL + 1)
    ]
    assert [a.status_code for a in answers] == [200] * LOGIN_LIMIT_PER_EMAIL + [429]
    # The auth replicas took turns, so did their rate limiters: each counted half the attempts
    # in the one Redis, and the sixth was refused whichever saw it.
    turns = [_upstream(a) for a in answers]
    assert all(a != b for a, b in itertools.pairwise(turns))
    assert set(turns) == {_address(s.auth_url) for s in cluster.stacks[:2]}


@pytest.mark.security(stride="SE", asvs=("V7.4", "V10.4"))
def test_refresh_reuse_and_logout_hold_on_every_auth_replica_at_once(cluster: Cluster) -> None:
    user = register(cluster.url)
    tokens = login(cluster.url, user)
    first = str(tokens["refresh_token"])
    middle = refresh(cluster.url, first, user)
    newest = refresh(cluster.url, middle.json()["refresh_token"], user)
    assert newest.status_code == 200, newest.text
    replay = refresh(cluster.url, first, user)  # a reuse: the whole family is revoked
    assert replay.json()["error"] == "invalid_grant"
    after = refresh(cluster.url, newest.json()["refresh_token"], user)
    assert after.json()["error"] == "invalid_grant"
    # Round robin: each step was answered by the other replica than the one before.
    steps = [middle, newest, replay, after]
    assert all(_upstream(a) != _upstream(b) for a, b in itertools.pairwise(steps))

    again = login(cluster.url, user)
    logout = httpx.post(f"{cluster.url}/v1/auth/logout", headers=bearer(again["access_token"]))
    assert logout.status_code == 204
    refused = refresh(cluster.url, str(again["refresh_token"]), user)
    assert refused.json()["error"] == "invalid_grant"
    assert _upstream(refused) != _upstream(logout)


@pytest.mark.security(stride="E", asvs=("V7.4",))
def test_a_revoked_session_is_refused_by_every_api_replica_within_a_second(
    cluster: Cluster,
) -> None:
    user = register(cluster.url)
    tokens = login(cluster.url, user)
    auth = bearer(tokens["access_token"], user)
    for url in cluster.api_urls():
        assert httpx.get(f"{url}/v1/me", headers=auth).status_code == 200
    logout = httpx.post(f"{cluster.url}/v1/auth/logout", headers=auth)
    assert logout.status_code == 204
    ended = time.monotonic()
    refused_after: dict[str, float] = {}
    while len(refused_after) < len(cluster.api_urls()) and time.monotonic() - ended < 1.0:
        for url in cluster.api_urls():
            if (
                url not in refused_after
                and httpx.get(f"{url}/v1/me", headers=auth).status_code == 401
            ):
                refused_after[url] = time.monotonic() - ended
        time.sleep(0.05)
    assert set(refused_after) == set(cluster.api_urls()), refused_after
    assert httpx.get(f"{cluster.url}/v1/me", headers=auth).status_code == 401


@dataclass(frozen=True)
class _Sent:
    method: str
    status: int  # 0: no answer at all


def _load(
    url: str, user: MobileUser, token: object, method: str, stop: threading.Event
) -> dict[str, _Sent]:
    """Requests one after another (about 12 a second) until ``stop``; by request id."""
    sent: dict[str, _Sent] = {}
    headers = bearer(token, user)
    with httpx.Client(base_url=url, timeout=15) as client:
        while not stop.is_set():
            rid = new_request_id("load")
            try:
                if method == "GET":
                    answer = client.get("/v1/notes", headers={**headers, "X-Request-ID": rid})
                else:
                    answer = client.post(
                        "/v1/notes",
                        json={"title": "load", "body": rid},
                        headers={**headers, "X-Request-ID": rid},
                    )
                sent[rid] = _Sent(method, answer.status_code)
            except httpx.HTTPError:
                sent[rid] = _Sent(method, 0)
            time.sleep(0.08)
    return sent


def test_killing_an_api_replica_under_load_costs_only_what_it_held(cluster: Cluster) -> None:
    """GETs are retried on the next replica (``proxy_next_upstream error timeout``); a POST
    the killed replica had received is not (it may have been written), so the client gets a
    502 for it: exactly those, at most one per POST worker (each has one request in flight).

    The replica is frozen (SIGSTOP) for half a second before its SIGKILL, so that it dies
    holding requests, as a stalled process killed by a watchdog or the OOM killer does; a
    SIGKILL at a random instant of this light load most often catches none in flight."""
    victim = cluster.stacks[2]
    victim_address = _address(victim.api_url)
    workers = {"GET": 3, "POST": 2}
    results: list[dict[str, _Sent]] = []
    stop = threading.Event()
    threads = []
    for method, count in workers.items():
        for _ in range(count):
            user = register(cluster.url)
            token = login(cluster.url, user)["access_token"]

            def run(u: MobileUser = user, t: object = token, m: str = method) -> None:
                results.append(_load(cluster.url, u, t, m, stop))

            threads.append(threading.Thread(target=run, daemon=True))
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.5)
        victim_pid = victim.stack.pid("api")
        os.kill(victim_pid, signal.SIGSTOP)
        time.sleep(0.5)
        os.kill(victim_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        time.sleep(2.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=20)
    assert time.monotonic() - killed_at < 30
    assert len(results) == len(threads)
    sent = {rid: s for worker in results for rid, s in worker.items()}
    logged = {a.request_id: a for a in cluster.ingress.attempts() if a.request_id in sent}
    assert set(logged) == set(sent)  # every request went through nginx and was logged

    gets = [s for s in sent.values() if s.method == "GET"]
    assert gets
    assert all(s.status == 200 for s in gets), sorted({s.status for s in gets})
    failed = {rid for rid, s in sent.items() if s.status != 201 and s.method == "POST"}
    assert {sent[rid].status for rid in failed} <= {502}
    # The ones the victim held: sent to it (its last try) and never answered.
    held = {
        rid
        for rid, a in logged.items()
        if a.upstreams[-1] == victim_address and a.upstream_statuses[-1] == "502"
    }
    assert failed == held
    assert 1 <= len(failed) <= workers["POST"]
    # GETs it held were retried on another replica, and answered there.
    retried = [
        a
        for a in logged.values()
        if a.method == "GET" and a.upstreams[0] == victim_address and len(a.upstreams) > 1
    ]
    assert retried
    assert all(a.upstream_statuses == ("502", "200") for a in retried)
