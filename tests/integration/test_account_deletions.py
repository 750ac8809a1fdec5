"""Account deletion, the API's side (docs/account-deletion.md): the consumer of the
account-deletion stream erases a deleted user's rows and objects, and nobody else's; an
entry handled twice is harmless; a malformed entry is acknowledged and logged; anomaly
flags can be deleted only by the erasure of their own user.

The consumer runs in this process, against the session stack's migrated API database, the
test's Redis (a key prefix of its own) and a local storage folder of its own. The crash of
an API process mid-deletion is in test_account_deletion_crash.py.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio
import structlog
from moto.server import ThreadedMotoServer

from bulwark.api.account_deletions.consumer import DeletionConsumer
from bulwark.api.account_deletions.service import Erased, erase_user
from bulwark.api.uploads.config import S3Config, UploadConfig
from bulwark.api.uploads.local_storage import LocalStorage
from bulwark.api.uploads.storage import S3Storage, StorageUnavailableError
from bulwark.common.account_deletions import CONSUMER_GROUP, publish, stream_key
from bulwark.common.db import open_database

from .conftest import RunningStack

TABLES = {
    "notes": "owner_id",
    "uploads": "owner_id",
    "idempotency_keys": "owner_id",
    "anomaly_flags": "user_id",
}


async def add_user_data(conn: asyncpg.Connection, root: Path, user_id: uuid.UUID) -> None:
    """Two notes, a complete upload (checked file and PUT object), a pending one (its
    object), an object no record names (PUT after its upload was deleted), an idempotency
    key and an anomaly flag of ``user_id``."""
    for title in ("one", "two"):
        await conn.execute(
            "INSERT INTO notes (id, owner_id, title, body) VALUES ($1, $2, $3, 'text')",
            uuid.uuid4(),
            user_id,
            title,
        )
    for state in ("complete", "pending"):
        upload_id = uuid.uuid4()
        await conn.execute(
            "INSERT INTO uploads (id, owner_id, object_key, filename, content_type, size,"
            " state, completed_at) VALUES ($1, $2, $3, 'a.png', 'image/png', 4, $4,"
            " CASE WHEN $4 = 'complete' THEN now() END)",
            upload_id,
            user_id,
            f"uploads/{user_id}/{upload_id}",
            state,
        )
        put_object = root / "uploads" / str(user_id) / str(upload_id)
        put_object.parent.mkdir(parents=True, exist_ok=True)
        put_object.write_bytes(b"data")
        if state == "complete":
            checked = root / "files" / str(user_id) / str(upload_id)
            checked.parent.mkdir(parents=True, exist_ok=True)
            checked.write_bytes(b"data")
    (root / "uploads" / str(user_id) / str(uuid.uuid4())).write_bytes(b"orphan")
    await conn.execute(
        "INSERT INTO idempotency_keys (owner_id, key, fingerprint, status, headers, body,"
        " expires_at) VALUES ($1, 'k1', $2, 201, '{}', 'x', now() + interval '1 day')",
        user_id,
        secrets.token_bytes(32),
    )
    await conn.execute(
        "INSERT INTO anomaly_flags (user_id, kind, evidence) VALUES ($1, 'burst', '{}')",
        user_id,
    )


async def row_counts(conn: asyncpg.Connection, user_id: uuid.UUID) -> dict[str, int]:
    """Rows of ``user_id`` in each table the API keys by user."""
    return {
        table: await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {column} = $1", user_id)  # noqa: S608  # fixed names
        for table, column in TABLES.items()
    }


def object_files(root: Path, user_id: uuid.UUID) -> list[Path]:
    """Every file (objects and anything else) in ``user_id``'s folders of the storage."""
    return [
        path
        for folder in (root / "uploads" / str(user_id), root / "files" / str(user_id))
        if folder.exists()
        for path in folder.iterdir()
    ]


FULL = {"notes": 2, "uploads": 2, "idempotency_keys": 1, "anomaly_flags": 1}


@dataclass
class Rig:
    """A consumer on a stream of its own, over the stack's API database and a folder."""

    consumer: DeletionConsumer
    erase: Callable[[uuid.UUID], Awaitable[Erased]]
    redis: redis.asyncio.Redis
    conn: asyncpg.Connection
    root: Path
    prefix: str


@asynccontextmanager
async def rig(stack: RunningStack, root: Path) -> AsyncIterator[Rig]:
    prefix = f"test:{secrets.token_hex(4)}:"
    db = await open_database(stack.databases["api"], max_size=2)
    client = redis.asyncio.Redis.from_url(stack.config.redis_url, socket_timeout=5)
    conn = await asyncpg.connect(stack.databases["api"], timeout=10)
    storage = LocalStorage.open(UploadConfig(local_dir=root), stack.api_url)

    async def erase(user_id: uuid.UUID) -> Erased:
        return await erase_user(db, storage, user_id)

    consumer = DeletionConsumer(client, erase, prefix=prefix, block_seconds=0.2, name="tester")
    try:
        yield Rig(consumer, erase, client, conn, root, prefix)
    finally:
        await client.delete(stream_key(prefix))
        await client.aclose()
        await conn.close()
        await db.close()


async def pending(rig: Rig) -> int:
    summary = await rig.redis.xpending(stream_key(rig.prefix), CONSUMER_GROUP)
    return int(summary["pending"])


def test_deletion_erases_the_user_only_and_twice_is_harmless(
    stack: RunningStack, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with rig(stack, tmp_path) as r:
            alice, bob = uuid.uuid4(), uuid.uuid4()
            for user in (alice, bob):
                await add_user_data(r.conn, r.root, user)
            assert len(object_files(r.root, alice)) == 4
            entry = await publish(r.redis, r.prefix, alice, datetime.now(UTC))

            with structlog.testing.capture_logs() as logs:
                assert await r.consumer.run_once() == 1
            assert await row_counts(r.conn, alice) == dict.fromkeys(TABLES, 0)
            assert object_files(r.root, alice) == []
            assert not (r.root / "uploads" / str(alice)).exists()
            # Bob's rows and objects are all there.
            assert await row_counts(r.conn, bob) == FULL
            assert len(object_files(r.root, bob)) == 4
            assert await pending(r) == 0  # acknowledged
            done = [line for line in logs if line["event"] == "account_data_deleted"]
            assert done == [
                {
                    "event": "account_data_deleted",
                    "log_level": "info",
                    "user_id": str(alice),
                    "entry_id": entry,
                    "objects": 4,
                    "uploads": 2,
                    "notes": 2,
                    "idempotency_keys": 1,
                    "anomaly_flags": 1,
                }
            ]

            # The same deletion again (a replica died before its XACK, a producer retried):
            # nothing to do, nothing else touched.
            await publish(r.redis, r.prefix, alice, datetime.now(UTC))
            with structlog.testing.capture_logs() as logs:
                assert await r.consumer.run_once() == 1
            again = [line for line in logs if line["event"] == "account_data_deleted"]
            assert [line["objects"] + line["notes"] + line["uploads"] for line in again] == [0]
            assert await row_counts(r.conn, bob) == FULL
            assert len(object_files(r.root, bob)) == 4
            assert await pending(r) == 0

    asyncio.run(scenario())


def test_a_malformed_entry_is_acknowledged_and_logged(stack: RunningStack, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(stack, tmp_path) as r:
            bob = uuid.uuid4()
            await add_user_data(r.conn, r.root, bob)
            await r.consumer.ensure_group()
            bad = await r.redis.xadd(
                stream_key(r.prefix),
                {"user_id": "not-a-uuid", "deleted_at": "2026-12-07T00:00:00Z"},
            )
            with structlog.testing.capture_logs() as logs:
                assert await r.consumer.run_once() == 1
            assert await pending(r) == 0
            assert [(line["event"], line["log_level"]) for line in logs] == [
                ("account_deletion_malformed", "error")
            ]
            assert logs[0]["entry_id"] == bad.decode()
            assert "not-a-uuid" not in str(logs)  # the entry's content is not logged
            assert await row_counts(r.conn, bob) == FULL

    asyncio.run(scenario())


def test_a_failed_erasure_is_not_acknowledged_and_is_retried(
    stack: RunningStack, tmp_path: Path
) -> None:
    """The storage fails: the rows stay, the entry stays
    pending; once the storage is back, the next round erases and acknowledges it."""

    async def scenario() -> None:
        async with rig(stack, tmp_path) as r:
            alice = uuid.uuid4()
            await add_user_data(r.conn, r.root, alice)
            await publish(r.redis, r.prefix, alice, datetime.now(UTC))
            # Something the storage cannot delete as an object (also when run as root).
            stuck = r.root / "uploads" / str(alice) / "stuck"
            stuck.mkdir()
            with pytest.raises(StorageUnavailableError):
                await r.consumer.run_once()
            stuck.rmdir()
            assert await row_counts(r.conn, alice) == FULL
            assert await pending(r) == 1
            # Next round: its own pending entry first, no new read needed.
            assert await r.consumer.run_once() == 1
            assert await row_counts(r.conn, alice) == dict.fromkeys(TABLES, 0)
            assert object_files(r.root, alice) == []
            assert await pending(r) == 0

    asyncio.run(scenario())


def test_an_entry_held_by_a_dead_consumer_is_taken_over(
    stack: RunningStack, tmp_path: Path
) -> None:
    """A consumer read the entry and died before acknowledging it: another takes it over
    once it has been idle for the claim time, and not before."""

    async def scenario() -> None:
        async with rig(stack, tmp_path) as r:
            alice = uuid.uuid4()
            await add_user_data(r.conn, r.root, alice)
            await r.consumer.ensure_group()
            await publish(r.redis, r.prefix, alice, datetime.now(UTC))
            # The dead one: it read the entry (XREADGROUP) and nothing more.
            await r.redis.xreadgroup(CONSUMER_GROUP, "dead", {stream_key(r.prefix): ">"})

            survivor = DeletionConsumer(
                r.redis, r.erase, prefix=r.prefix, claim_idle_seconds=1, block_seconds=0.1
            )
            assert await survivor.run_once() == 0  # not idle long enough yet
            assert await row_counts(r.conn, alice) == FULL
            await asyncio.sleep(1.1)
            assert await survivor.run_once() == 1
            assert await row_counts(r.conn, alice) == dict.fromkeys(TABLES, 0)
            assert await pending(r) == 0

    asyncio.run(scenario())


def test_anomaly_flags_are_deleted_only_by_their_own_users_erasure(stack: RunningStack) -> None:
    async def scenario() -> None:
        conn = await asyncpg.connect(stack.databases["api"], timeout=10)
        try:
            alice, bob = uuid.uuid4(), uuid.uuid4()
            for user in (alice, bob):
                await conn.execute(
                    "INSERT INTO anomaly_flags (user_id, kind, evidence) VALUES ($1, 'x', '{}')",
                    user,
                )
            flags = "SELECT count(*) FROM anomaly_flags WHERE user_id = $1"
            delete = "DELETE FROM anomaly_flags WHERE user_id = $1"
            with pytest.raises(asyncpg.RaiseError, match="kept as detected"):
                await conn.execute(delete, alice)  # no erasure under way
            async with conn.transaction():
                await conn.execute("SELECT set_config('bulwark.erase_user', $1, true)", str(bob))
                with pytest.raises(asyncpg.RaiseError, match="kept as detected"):
                    await conn.execute(delete, alice)  # another user's erasure
            with pytest.raises(asyncpg.RaiseError, match="kept as detected"):
                await conn.execute("TRUNCATE anomaly_flags")
            async with conn.transaction():
                await conn.execute("SELECT set_config('bulwark.erase_user', $1, true)", str(alice))
                assert await conn.execute(delete, alice) == "DELETE 1"
            # The setting ended with its transaction.
            with pytest.raises(asyncpg.RaiseError, match="kept as detected"):
                await conn.execute(delete, bob)
            assert (await conn.fetchval(flags, alice), await conn.fetchval(flags, bob)) == (0, 1)
        finally:
            await conn.close()

    asyncio.run(scenario())


def test_s3_deletes_every_object_of_the_user_over_pages_and_nobody_elses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`S3Storage.delete_owned` against a real S3-compatible server (moto): more objects
    than one listing page (1,000) under ``uploads/<user>/``, some under ``files/<user>/``;
    another user's objects, and a key that only starts like the user's, stay."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    config = S3Config(bucket="erasure", endpoint_url=f"http://{host}:{port}", timeout=5.0)
    storage = S3Storage(config)
    client = storage._client  # the storage's own client, to set the scene
    try:
        client.create_bucket(Bucket="erasure")
        alice, bob = uuid.uuid4(), uuid.uuid4()
        alice_keys = [f"uploads/{alice}/{uuid.uuid4()}" for _ in range(1001)]
        alice_keys += [f"files/{alice}/{uuid.uuid4()}" for _ in range(2)]
        others = [f"uploads/{bob}/{uuid.uuid4()}", f"files/{bob}/{uuid.uuid4()}"]
        others.append(f"uploads/{alice}x/{uuid.uuid4()}")  # not under "uploads/<alice>/"
        with ThreadPoolExecutor(8) as pool:
            put = functools.partial(client.put_object, Bucket="erasure", Body=b"x")
            list(pool.map(lambda key: put(Key=key), alice_keys + others))

        assert asyncio.run(storage.delete_owned(alice)) == 1003
        remaining = client.list_objects_v2(Bucket="erasure").get("Contents", [])
        assert sorted(item["Key"] for item in remaining) == sorted(others)
        assert asyncio.run(storage.delete_owned(alice)) == 0  # again: nothing, no error
    finally:
        asyncio.run(storage.aclose())
        server.stop()


def test_trimming_drops_only_acknowledged_entries(stack: RunningStack, tmp_path: Path) -> None:
    """Entries past the retention (ids of 1970 here) go only once acknowledged: never one
    still pending, nor one not yet delivered to the group."""

    async def scenario() -> None:
        async with rig(stack, tmp_path) as r:
            key = stream_key(r.prefix)
            await r.consumer.ensure_group()
            fields = {"user_id": str(uuid.uuid4()), "deleted_at": "1970-01-01T00:00:01Z"}
            for entry_id in ("1000-0", "2000-0", "3000-0"):
                await r.redis.xadd(key, fields, id=entry_id)
            await r.redis.xreadgroup(CONSUMER_GROUP, "dead", {key: ">"}, count=3)
            await r.redis.xack(key, CONSUMER_GROUP, "1000-0", "3000-0")
            await r.redis.xadd(key, fields, id="4000-0")  # not delivered yet

            assert await r.consumer.trim() == 1
            ids = [entry_id.decode() for entry_id, _ in await r.redis.xrange(key)]
            assert ids == ["2000-0", "3000-0", "4000-0"]  # 2000-0 is pending
            await r.redis.xack(key, CONSUMER_GROUP, "2000-0")
            assert await r.consumer.trim() == 2
            assert [entry_id.decode() for entry_id, _ in await r.redis.xrange(key)] == ["4000-0"]
            # The consumer that held 2000-0 has been idle for less than the retention: kept.
            consumers = await r.redis.xinfo_consumers(key, CONSUMER_GROUP)
            assert [c["name"] for c in consumers] == [b"dead"]

    asyncio.run(scenario())


def test_the_loop_logs_a_failure_backs_off_and_finishes_when_the_cause_is_gone(
    stack: RunningStack, tmp_path: Path
) -> None:
    """`DeletionConsumer.run_forever`: the storage fails, the failure is logged with the
    entry's id and retried after a backoff (not in a tight loop); once the cause is gone the
    deletion finishes and the recovery is logged. Cancelling the loop ends it."""

    async def scenario() -> None:
        async with rig(stack, tmp_path) as r:
            alice = uuid.uuid4()
            await add_user_data(r.conn, r.root, alice)
            entry = await publish(r.redis, r.prefix, alice, datetime.now(UTC))
            stuck = r.root / "uploads" / str(alice) / "stuck"
            stuck.mkdir()
            with structlog.testing.capture_logs() as logs:
                loop = asyncio.create_task(r.consumer.run_forever())
                await asyncio.sleep(1.2)  # attempts at 0, ~0.5 and ~1.5 s: two so far
                failed = [line for line in logs if line["event"] == "account_deletion_failed"]
                assert [(f["error_type"], f["entry_id"]) for f in failed] == [
                    ("StorageUnavailableError", entry)
                ] * len(failed)
                assert 1 <= len(failed) <= 2
                assert await row_counts(r.conn, alice) == FULL
                stuck.rmdir()
                for _ in range(50):
                    if await pending(r) == 0:
                        break
                    await asyncio.sleep(0.1)
                loop.cancel()
                await asyncio.gather(loop, return_exceptions=True)
            assert loop.cancelled()
            assert await row_counts(r.conn, alice) == dict.fromkeys(TABLES, 0)
            events = [line["event"] for line in logs]
            assert events[-2:] == ["account_data_deleted", "account_deletion_recovered"]

    asyncio.run(scenario())
