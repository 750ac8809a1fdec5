"""Migrations are a one-shot command (``bulwark-auth migrate``, ``bulwark-api migrate``), safe
when several start at once, and never a side effect of a serving replica starting: a replica
on an unmigrated database does not create a table and answers ``/readyz`` 503 until the
command has run."""

import asyncio
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from bulwark.api.app import MIGRATIONS as API_MIGRATIONS
from bulwark.auth.app import MIGRATIONS as AUTH_MIGRATIONS
from bulwark.common.migrations import migration_files
from bulwark.devstack.net import free_port
from bulwark.devstack.stack import console_script

from .conftest import RunningStack, databases_on
from .helpers import assert_problem


def _migrate(service: str, database_url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "info"}
    return subprocess.Popen(  # noqa: S603 - our own console script
        [console_script(f"bulwark-{service}"), "migrate"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _events(output: str, event: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


async def _query(database_url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("service", "directory"), [("auth", AUTH_MIGRATIONS), ("api", API_MIGRATIONS)]
)
def test_four_jobs_at_once_apply_each_migration_exactly_once(
    database_server_url: str, service: str, directory: Path
) -> None:
    database_url = databases_on(database_server_url)[service]
    jobs = [_migrate(service, database_url) for _ in range(4)]
    outputs = [job.communicate(timeout=60)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0, 0, 0], outputs
    applied = [e["version"] for out in outputs for e in _events(out, "migration_applied")]
    versions = [version for version, _ in migration_files(directory)]
    assert sorted(applied) == versions  # each file once, by one of the jobs
    rows = asyncio.run(_query(database_url, "SELECT version FROM schema_migrations"))
    assert sorted(row["version"] for row in rows) == versions
    # a later run finds nothing to do
    again = _migrate(service, database_url)
    output = again.communicate(timeout=60)[0]
    assert again.returncode == 0
    assert _events(output, "migrations_done")[0]["count"] == 0


@pytest.mark.security(stride="I", asvs=("V13.3",))
def test_an_unreachable_database_exits_1_without_the_password() -> None:
    job = _migrate("api", f"postgresql://bulwark:n0t-this-pw@127.0.0.1:{free_port()}/x")
    output = job.communicate(timeout=60)[0]
    assert job.returncode == 1
    assert _events(output, "migrations_failed")
    assert "n0t-this-pw" not in output


def test_no_database_url_is_a_configuration_error() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    job = subprocess.run(  # noqa: S603 - our own console script
        [console_script("bulwark-auth"), "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert job.returncode == 2
    assert "DATABASE_URL must be set" in job.stderr


@pytest.fixture
def unmigrated_api(stack: RunningStack, database_server_url: str) -> Iterator[tuple[str, str]]:
    """An API replica serving on a fresh, unmigrated database: ``(base URL, database URL)``."""
    database_url = databases_on(database_server_url)["api"]
    port = free_port()
    env = {
        **os.environ,
        **stack.env["api"],
        "DATABASE_URL": database_url,
        "PORT": str(port),
        "METRICS_PORT": str(free_port()),
    }
    log = open(stack.log_dir / f"api-unmigrated-{port}.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(  # noqa: S603 - our own console script
        [console_script("bulwark-api"), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, "the API exited on an unmigrated database"
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the API did not answer /healthz in 30 s"
            time.sleep(0.2)
        yield base, database_url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()


def test_a_serving_replica_never_migrates_and_is_ready_once_the_job_ran(
    unmigrated_api: tuple[str, str],
) -> None:
    base, database_url = unmigrated_api
    time.sleep(0.5)  # a replica that migrated at start-up would have done it by now
    tables = asyncio.run(
        _query(database_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    )
    assert tables == []
    not_ready = httpx.get(f"{base}/readyz", timeout=5)
    assert_problem(not_ready, 503)
    assert "schema" in not_ready.json()["detail"]
    assert "schema_migrations" not in not_ready.text

    job = _migrate("api", database_url)
    assert job.communicate(timeout=60)[0] is not None
    assert job.returncode == 0
    assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200


@pytest.mark.security(stride="I", asvs=("V13.3",))
@pytest.mark.parametrize(
    "password",
    ["Sx9Qp#Zr7k", "abcd/efgh9", "1234#abcdef", "qwerty?xy=12345"],
)
def test_a_password_with_unescaped_characters_is_refused_without_being_repeated(
    password: str,
) -> None:
    """Managed databases hand out such passwords; a URL that does not parse must say so
    (exit 2) without a traceback or any piece of the password in the output."""
    env = {**os.environ, "DATABASE_URL": f"postgresql://bulwark:{password}@127.0.0.1:5432/db"}
    for service in ("auth", "api"):
        job = subprocess.run(  # noqa: S603 - our own console script
            [console_script(f"bulwark-{service}"), "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        output = job.stdout + job.stderr
        assert job.returncode == 2, output
        assert "percent-encode" in output
        assert "Traceback" not in output
        for piece in re.split(r"[#/?=]", password):
            assert piece not in output, (piece, output)
