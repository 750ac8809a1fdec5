"""Cross-service fixtures: real Postgres and Redis, the real services as processes.

Postgres and Redis, once per session, in this order of preference:
1. ``TEST_DATABASE_URL`` / ``TEST_REDIS_URL`` (CI sets them to the machine's servers);
2. testcontainers, when a Docker engine answers ``docker info`` within a few seconds;
3. the embedded servers of ``bulwark.devstack.embedded`` (under ``.bulwark/data/test-*``).

``stack_factory`` starts a Bulwark stack (fresh databases, free ports, a random Redis key
prefix, ``BULWARK_ENV=test``, temporary keys and rules, and an SMTP sink the auth service
sends to: ``running.mail.wait_for(address)``) and stops it at the end of the session;
``stack`` is the default one. A test that needs a second stack (say, a second auth instance
sharing the first one's database and keys) calls the factory with overrides.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from bulwark.devstack.cli import repo_root
from bulwark.devstack.databases import create_databases, drop_databases, unique_names
from bulwark.devstack.embedded import EmbeddedPostgres, EmbeddedRedis
from bulwark.devstack.mail import SmtpSink
from bulwark.devstack.net import free_port
from bulwark.devstack.rules import packaged_rules_with_raised_limits
from bulwark.devstack.stack import SERVICE_ORDER, Stack, StackConfig, bulwark_services

from .outages import REDIS_SERVER, ThrowawayRedis, resume

_DOCKER_TIMEOUT = 5.0


def _docker_answers() -> bool:
    """True when a Docker engine answers ``docker info`` within a few seconds."""
    docker = shutil.which("docker")
    host = os.environ.get("DOCKER_HOST", "")
    if docker is None or (not host and not Path("/var/run/docker.sock").exists()):
        return False
    try:
        return (
            subprocess.run(  # noqa: S603 - fixed command
                [docker, "info"], capture_output=True, timeout=_DOCKER_TIMEOUT, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def docker_available() -> bool:
    """Whether testcontainers can be used in this session."""
    return _docker_answers()


@pytest.fixture(scope="session")
def embedded_dir() -> Iterator[Path]:
    """Scratch folder for embedded servers, under ``.bulwark/data`` (as root, Postgres runs as
    an unprivileged account that cannot enter pytest's 0700 temporary folders)."""
    path = repo_root() / ".bulwark" / "data" / f"test-{secrets.token_hex(4)}"
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def database_server_url(docker_available: bool, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a Postgres server whose superuser can create databases."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
    elif docker_available:
        from testcontainers.postgres import PostgresContainer  # noqa: PLC0415 - only with Docker

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
    else:
        embedded_dir: Path = request.getfixturevalue("embedded_dir")
        with EmbeddedPostgres(embedded_dir / "postgres") as server:
            yield server.url


@pytest.fixture(scope="session")
def redis_url(docker_available: bool, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a Redis server (tests share it; each stack uses its own key prefix)."""
    if url := os.environ.get("TEST_REDIS_URL"):
        yield url
    elif docker_available:
        from testcontainers.community.redis import RedisContainer  # noqa: PLC0415

        with RedisContainer("redis:7-alpine") as container:
            host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
            yield f"redis://{host}:{port}/0"
    else:
        embedded_dir: Path = request.getfixturevalue("embedded_dir")
        with EmbeddedRedis(embedded_dir / "redis") as server:
            yield server.url


def packaged_rules(destination: Path) -> Path | None:
    """Copy ``rules.yaml`` shipped in ``bulwark.ratelimit`` to ``destination``; None if absent."""
    try:
        source = importlib.resources.files("bulwark.ratelimit").joinpath("rules.yaml")
    except ModuleNotFoundError:
        return None
    if not source.is_file():
        return None
    destination.write_bytes(source.read_bytes())
    return destination


def raised_api_limits(destination: Path) -> Path:
    """The packaged rules with the API's limits raised out of a test's reach, written to
    ``destination``: for a test whose clients call the API at full speed and must be served
    (the packaged 300 a minute per user runs out within a second on a fast machine)."""
    destination.write_text(packaged_rules_with_raised_limits(domains=frozenset({"bulwark-api"})))
    return destination


@dataclass
class RunningStack:
    """A started stack: where its services listen and how they were configured. ``mail`` is
    the SMTP sink its auth service sends to (``mail.messages()``, ``mail.wait_for(to)``)."""

    auth_url: str
    api_url: str
    ratelimit_target: str
    log_dir: Path
    env: dict[str, dict[str, str]]  # per service: the variables it was started with
    databases: dict[str, str]  # "auth" / "api" -> database URL
    config: StackConfig
    stack: Stack = field(repr=False)
    mail: SmtpSink = field(repr=False)

    def log(self, service: str) -> str:
        """The log of ``service`` so far (one JSON object per line), read once it has stopped
        growing for 0.1 s (at most 3 s): a service writes a request's access line just after
        sending the response, so a test reading right after a response could miss it."""
        path = self.log_dir / f"{service}.log"
        deadline = time.monotonic() + 3
        size = path.stat().st_size
        while time.monotonic() < deadline:
            time.sleep(0.1)
            size, previous = path.stat().st_size, size
            if size == previous:
                break
        return path.read_text(errors="replace")


class StackFactory(Protocol):
    """Signature of ``stack_factory``."""

    def __call__(
        self,
        *,
        services: Sequence[str] = SERVICE_ORDER,
        databases: Mapping[str, str] | None = None,
        keys_dir: Path | None = None,
        redis_key_prefix: str | None = None,
        env: Mapping[str, Mapping[str, str]] | None = None,
        bulwark_env: str = "test",
    ) -> RunningStack:
        """Start a stack; ``databases`` reuses existing database URLs (``{"auth": url}``),
        ``env`` adds or overrides variables per service."""
        ...


@pytest.fixture(scope="session")
def session_stack_factory(
    database_server_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StackFactory]:
    """Start Bulwark stacks; every one still running is stopped, and every database made
    dropped, at session end. Modules start theirs through ``stack_factory``."""
    started: list[Stack | SmtpSink] = []
    created: list[str] = []

    def start(
        *,
        services: Sequence[str] = SERVICE_ORDER,
        databases: Mapping[str, str] | None = None,
        keys_dir: Path | None = None,
        redis_key_prefix: str | None = None,
        env: Mapping[str, Mapping[str, str]] | None = None,
        bulwark_env: str = "test",
    ) -> RunningStack:
        work = tmp_path_factory.mktemp("stack")
        urls = dict(databases or {})
        names = {svc: name for svc, name in unique_names().items() if svc not in urls}
        if names:
            created.extend(names.values())
            made = asyncio.run(create_databases(database_server_url, names.values()))
            urls.update({svc: made[name] for svc, name in names.items()})
        sink = SmtpSink(work / "mail")
        started.append(sink)
        sink.start()
        config = StackConfig(
            auth_database_url=urls["auth"],
            api_database_url=urls["api"],
            redis_url=redis_url,
            api_port=free_port(),
            auth_port=free_port(),
            ratelimit_port=free_port(),
            metrics_ports={svc: free_port() for svc in SERVICE_ORDER},
            bulwark_env=bulwark_env,
            keys_dir=keys_dir or work / "keys",
            uploads_dir=work / "uploads",
            redis_key_prefix=redis_key_prefix or f"rl:test:{secrets.token_hex(4)}:",
            # Derived, so stacks that share a limiter prefix share revoked sessions too.
            session_key_prefix=f"bulwark:{redis_key_prefix or secrets.token_hex(4)}:",
            ratelimit_rules=packaged_rules(work / "rules.yaml"),
            log_level="info",
            smtp_url=sink.url,
            env=env or {},
        )
        stack = Stack(bulwark_services(config, only=services), work / "logs", stop_grace=5.0)
        started.append(stack)
        stack.start()
        return RunningStack(
            auth_url=config.auth_url,
            api_url=config.api_url,
            ratelimit_target=config.ratelimit_target,
            log_dir=work / "logs",
            env={svc: e for svc, e in config.service_env().items() if svc in services},
            databases=urls,
            config=config,
            stack=stack,
            mail=sink,
        )

    try:
        yield start
    finally:
        for thing in reversed(started):
            thing.stop()
        if created:
            asyncio.run(drop_databases(database_server_url, created))


@pytest.fixture(scope="module")
def stack_factory(session_stack_factory: StackFactory) -> Iterator[StackFactory]:
    """Start Bulwark stacks for one test module (see `session_stack_factory`); they are
    stopped when the module is done, so that idle stacks of earlier modules hold no
    database connections and no CPU while later ones run."""
    started: list[RunningStack] = []

    def start(**kwargs: Any) -> RunningStack:
        running = session_stack_factory(**kwargs)
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in reversed(started):
            running.stack.stop()
            running.mail.stop()


@pytest.fixture(scope="module")
def throwaway_redis() -> Iterator[ThrowawayRedis]:
    """A Redis of the test module's own (no persistence), that it may stop and start."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not on PATH")
    server = ThrowawayRedis()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def throwaway_postgres(embedded_dir: Path) -> Iterator[EmbeddedPostgres]:
    """A Postgres of the test module's own (the embedded server), that it may stop, start
    or freeze (`outages.stall`)."""
    server = EmbeddedPostgres(embedded_dir / f"pg-{secrets.token_hex(4)}")
    server.start()
    yield server
    resume(server)
    server.stop()


def databases_on(server_url: str) -> dict[str, str]:
    """Fresh auth and api databases on the Postgres at ``server_url``: ``{"auth": url, ...}``,
    for ``stack_factory(databases=...)``."""
    names = unique_names()
    urls = asyncio.run(create_databases(server_url, names.values()))
    return {service: urls[name] for service, name in names.items()}


@pytest.fixture(scope="session")
def stack(session_stack_factory: StackFactory) -> RunningStack:
    """The default stack: ratelimit, auth and api, started once per session."""
    return session_stack_factory()
