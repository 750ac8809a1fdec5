"""Signing-key life cycle against the running services (docs/keys.md).

- a rotation (generate next, wait, rotate) under steady traffic fails no request, and tokens
  of the old key still verify at the API afterwards;
- ``revoke`` of the active key makes its tokens 401 at the API within two seconds;
- a staging token is refused by a production API that accepts production tokens.

The stacks here publish the JWKS with ``JWKS_MAX_AGE_SECONDS=1`` and let the API refetch
after 1 s (``JWKS_MIN_REFRESH_SECONDS=1``), so the waits are seconds instead of minutes.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from bulwark.auth.cli import main
from bulwark.auth.keys import read_keys
from bulwark.auth.keys.files import StoredKey, generate_key, write_key
from bulwark.common.access_tokens import JWKS_HOLD_SECONDS
from bulwark.devstack.net import free_port

from .conftest import RunningStack, StackFactory
from .helpers import MobileUser, bearer, login, refresh, register

pytestmark = pytest.mark.security(stride="S", asvs=("V9.1",))

MAX_AGE = 1  # JWKS_MAX_AGE_SECONDS of these stacks
PUBLISH_WAIT = 1 + MAX_AGE + 1  # reload poll + max-age + whole-second timestamps
#: How long a revoked key may still verify at the API, whatever its JWKS cache holds: the
#: auth's reload poll (1 s), listing the kid in Redis, one request.
REVOCATION_BOUND = 2.0
#: Pause between a client's cycles, in seconds: stays within the per-IP login limit (300 per
#: 15 minutes) and the API's (600 per minute) for the whole module.
PACE = 0.25
FAST_JWKS = {
    "auth": {"JWKS_MAX_AGE_SECONDS": str(MAX_AGE)},
    "api": {"JWKS_MIN_REFRESH_SECONDS": "1"},
}


def keys_command(directory: Path, *args: str) -> tuple[int, str]:
    """``bulwark-auth keys <args> --dir directory --jwks-max-age 1`` (the command's ``main``,
    in this process: a new interpreter costs a second under load); (status, output)."""
    output = io.StringIO()
    argv = ["keys", *args, "--dir", str(directory), "--jwks-max-age", str(MAX_AGE)]
    with redirect_stdout(output), redirect_stderr(output):
        status = main(argv)
    return status, output.getvalue()


def key_whose_kid_begins_with(prefix: str, environment: str) -> StoredKey:
    """An active ES256 key whose kid (its RFC 7638 thumbprint) begins with ``prefix``."""
    for _ in range(100_000):  # one thumbprint in 64 begins with "-"
        key = generate_key(environment)
        if key.kid.startswith(prefix):
            return key
    raise AssertionError(f"no kid beginning with {prefix!r}")


def kid_of(token: object) -> str:
    """The ``kid`` of a JWS compact token's header."""
    header = str(token).split(".", 1)[0]
    kid: str = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]
    return kid


def me(stack: RunningStack, token: object, user: MobileUser | None = None) -> int:
    """Status of ``GET /v1/me`` at the API with ``token``."""
    return httpx.get(f"{stack.api_url}/v1/me", headers=bearer(token, user), timeout=5).status_code


def states(directory: Path) -> dict[str, str]:
    """``{kid: state}`` of the key files in ``directory``."""
    return {key.kid: key.state for key in read_keys(directory)}


@pytest.fixture(scope="module")
def rotating_stack(
    stack_factory: StackFactory, tmp_path_factory: pytest.TempPathFactory
) -> RunningStack:
    """A stack of its own (its keys change), with a one-second JWKS cache lifetime."""
    keys_dir = tmp_path_factory.mktemp("rotating") / "keys"
    return stack_factory(keys_dir=keys_dir, env=FAST_JWKS)


@dataclass
class Traffic:
    """Clients looping login -> GET /v1/me -> refresh -> GET /v1/me until stopped."""

    stack: RunningStack
    failures: list[str] = field(default_factory=list)
    kids: set[str] = field(default_factory=set)
    cycles: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self) -> None:
        """One client's loop, paced; a new user every 4 cycles (the login limit is 5 per email)."""
        auth = httpx.Client(base_url=self.stack.auth_url, timeout=10)
        api = httpx.Client(base_url=self.stack.api_url, timeout=10)
        cycle = 0
        try:
            while not self.stop.is_set():
                if cycle % 4 == 0:
                    user = register(self.stack.auth_url)
                self._cycle(auth, api, user)
                cycle += 1
                self.stop.wait(PACE)
        except Exception as exc:  # noqa: BLE001  # any error is a failed request
            with self.lock:
                self.failures.append(repr(exc))
        finally:
            auth.close()
            api.close()

    def _cycle(self, auth: httpx.Client, api: httpx.Client, user: MobileUser) -> None:
        body = {"email": user.email, "password": user.password, "device": "phone"}
        steps: list[tuple[str, httpx.Response]] = []
        logged_in = auth.post("/v1/auth/login", json=body, headers=user.headers)
        steps.append(("login", logged_in))
        if logged_in.status_code == 200:
            tokens = logged_in.json()
            steps.append(("me", api.get("/v1/me", headers=bearer(tokens["access_token"], user))))
            refreshed = auth.post(
                "/oauth2/token",
                data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                headers=user.headers,
            )
            steps.append(("refresh", refreshed))
            if refreshed.status_code == 200:
                token = refreshed.json()["access_token"]
                steps.append(("me after refresh", api.get("/v1/me", headers=bearer(token, user))))
                with self.lock:
                    self.kids.update({kid_of(tokens["access_token"]), kid_of(token)})
        with self.lock:
            self.cycles += 1
            self.failures.extend(
                f"{name}: {response.status_code} {response.text[:200]}"
                for name, response in steps
                if response.status_code != 200
            )


@contextmanager
def running_traffic(stack: RunningStack, clients: int) -> Iterator[Traffic]:
    """``clients`` threads of ``Traffic.client`` for the duration of the ``with`` block."""
    traffic = Traffic(stack)
    threads = [threading.Thread(target=traffic.client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield traffic
    finally:
        traffic.stop.set()
        for thread in threads:
            thread.join(timeout=30)


@pytest.mark.security(stride="D", asvs=("V11",))
def test_rotation_under_traffic_fails_no_request(rotating_stack: RunningStack) -> None:
    stack = rotating_stack
    keys_dir = stack.config.keys_dir
    (first,) = states(keys_dir)  # generated by the service on first run (BULWARK_ENV=test)
    old_user = register(stack.auth_url)
    old_token = login(stack.auth_url, old_user)["access_token"]
    assert kid_of(old_token) == first

    with running_traffic(stack, clients=3) as traffic:
        time.sleep(0.5)
        status, output = keys_command(keys_dir, "generate", "--env", "test")
        assert status == 0, output
        (second,) = set(states(keys_dir)) - {first}
        time.sleep(PUBLISH_WAIT + 0.2)  # rotate refuses earlier (see test_keys_commands.py)
        status, output = keys_command(keys_dir, "rotate")
        assert status == 0, output
        assert states(keys_dir)[second] == "active"
        time.sleep(2)  # traffic signed by the new key

    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.cycles >= 10
    assert {first, second} <= traffic.kids
    # A token of the now retiring key still verifies; new tokens come from the new key.
    assert me(stack, old_token, old_user) == 200
    assert kid_of(login(stack.auth_url, register(stack.auth_url))["access_token"]) == second
    published = {
        key["kid"] for key in httpx.get(f"{stack.auth_url}/.well-known/jwks.json").json()["keys"]
    }
    assert published == set(states(keys_dir))  # retiring, active and the new next
    assert (
        "max-age=1" in httpx.get(f"{stack.auth_url}/.well-known/jwks.json").headers["cache-control"]
    )


def test_revoking_the_active_key_stops_its_tokens_at_the_api(
    stack_factory: StackFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # The API caches the JWKS for the default 5 minutes: the revoked-key set in Redis, not
    # the cache, must stop the key. (Its unknown-kid cooldown is short, so the promoted key,
    # new to the API, is fetched quickly after.) The compromised key's kid begins with "-",
    # as one in 64 does: `keys revoke -AbC…` must take it (this test used to fail at random).
    keys_dir = tmp_path_factory.mktemp("revoking") / "keys"
    write_key(keys_dir, key_whose_kid_begins_with("-", "test"))
    stack = stack_factory(keys_dir=keys_dir, env={"api": {"JWKS_MIN_REFRESH_SECONDS": "2"}})
    assert keys_command(keys_dir, "generate", "--env", "test")[0] == 0
    user = register(stack.auth_url)
    tokens = login(stack.auth_url, user)
    revoked = kid_of(tokens["access_token"])
    assert revoked.startswith("-")
    assert states(keys_dir)[revoked] == "active"
    assert me(stack, tokens["access_token"], user) == 200

    status, output = keys_command(keys_dir, "revoke", revoked)
    assert status == 0, output
    revoked_at = time.monotonic()
    while me(stack, tokens["access_token"], user) != 401:
        assert time.monotonic() - revoked_at < REVOCATION_BOUND, "revoked key still accepted"
        time.sleep(0.1)
    jwks = httpx.get(f"{stack.auth_url}/.well-known/jwks.json").json()
    assert revoked not in {key["kid"] for key in jwks["keys"]}
    # Listed for as long as an API's JWKS cache may hold the key, stale set included (an
    # auth outage keeps it serving): past the listing, a forged token would verify again.
    auth_env = stack.env["auth"]
    with redis.Redis.from_url(auth_env["REDIS_URL"]) as client:
        listed = client.ttl(f"{auth_env['REDIS_KEY_PREFIX']}revoked:kid:{revoked}")
    assert listed > JWKS_HOLD_SECONDS, listed

    # The session survives: its refresh token is not signed, and yields a token of the new key.
    renewed = refresh(stack.auth_url, str(tokens["refresh_token"]), user)
    assert renewed.status_code == 200, renewed.text
    new_token = renewed.json()["access_token"]
    assert kid_of(new_token) != revoked
    deadline = time.monotonic() + 5  # the API's unknown-kid cooldown (2 s), then a refetch
    while me(stack, new_token, user) != 200:
        assert time.monotonic() < deadline, "the promoted key never verified at the API"
        time.sleep(0.2)
    assert me(stack, tokens["access_token"], user) == 401  # and the old key stays refused


STAGING_ISSUER = "https://auth.staging.bulwark.test"
PRODUCTION_ISSUER = "https://auth.bulwark.test"


def _mail_env() -> dict[str, str]:
    """Mail settings production and staging accept (TLS, a sender); nothing listens there and
    no mail is read here: the registrations' mails just wait in the outbox."""
    return {
        "SMTP_URL": f"smtps://127.0.0.1:{free_port()}",
        "MAIL_FROM": "Bulwark <no-reply@bulwark.test>",
    }


@pytest.mark.security(stride="S", asvs=("V9.2",))
def test_a_staging_token_is_refused_by_the_production_api(
    stack_factory: StackFactory, tmp_path: Path
) -> None:
    # The issuers are https names (required outside development and test); they are only the
    # `iss` value here: the API fetches keys from JWKS_URL, the production auth's local port.
    directories = {env: tmp_path / env for env in ("staging", "production")}
    for environment, directory in directories.items():
        status, output = keys_command(directory, "generate", "--env", environment)
        assert status == 0, output
    production = stack_factory(
        bulwark_env="production",
        keys_dir=directories["production"],
        env={
            "auth": {
                "ISSUER": PRODUCTION_ISSUER,
                "EMAIL_FINGERPRINT_KEY": "p" * 32,
                **_mail_env(),
            },
            "api": {"ISSUER": PRODUCTION_ISSUER},
        },
    )
    staging = stack_factory(  # an auth service only; it shares the rate limiter
        services=("auth",),
        bulwark_env="staging",
        keys_dir=directories["staging"],
        env={
            "auth": {
                "ISSUER": STAGING_ISSUER,
                "RATELIMIT_TARGET": production.ratelimit_target,
                "EMAIL_FINGERPRINT_KEY": "s" * 32,
                **_mail_env(),
            }
        },
    )
    staging_user, production_user = register(staging.auth_url), register(production.auth_url)
    staging_token = login(staging.auth_url, staging_user)["access_token"]
    production_token = login(production.auth_url, production_user)["access_token"]

    assert me(production, production_token, production_user) == 200
    assert me(production, staging_token, staging_user) == 401
    assert kid_of(staging_token) not in states(directories["production"])
