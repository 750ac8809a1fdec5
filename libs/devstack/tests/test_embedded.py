"""The embedded servers start, accept real clients and leave no process behind."""

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis

from bulwark.devstack.cli import repo_root
from bulwark.devstack.databases import create_databases, drop_databases, unique_names
from bulwark.devstack.embedded import EmbeddedPostgres, EmbeddedRedis


def _processes_under(path: Path) -> list[str]:
    """Command lines of live (not zombie) processes that mention ``path``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            zombie = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except (OSError, IndexError):
            continue
        if str(path) in cmdline and not zombie:
            found.append(cmdline)
    return found


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A scratch folder under ``.bulwark/data``: as root, Postgres runs as an unprivileged
    account, which cannot enter pytest's (0700) temporary folders."""
    path = repo_root() / ".bulwark" / "data" / f"test-{secrets.token_hex(4)}"
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(60)
async def test_embedded_postgres_and_redis(data_dir: Path) -> None:
    tmp_path = data_dir
    with EmbeddedPostgres(tmp_path / "pg") as pg, EmbeddedRedis(tmp_path / "redis") as rd:
        assert _processes_under(tmp_path)
        conn = await asyncpg.connect(pg.url)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
        names = unique_names()
        urls = await create_databases(pg.url, names.values())
        assert await create_databases(pg.url, names.values()) == urls  # idempotent
        conn = await asyncpg.connect(urls[names["auth"]])
        assert await conn.fetchval("SELECT current_database()") == names["auth"]
        await conn.close()
        await drop_databases(pg.url, names.values())
        client = redis.Redis.from_url(rd.url)
        assert client.ping()
        client.close()
    assert _processes_under(tmp_path) == []
