"""Issue 15's required test: the API dies in the middle of a user's deletion and completes
it when it comes back (docs/account-deletion.md).

Alice and Bob create notes (one with an ``Idempotency-Key``) and uploads (one checked, so
both its objects exist) through the real API, with tokens from the real auth service. The
test then holds a lock on Alice's upload rows, publishes her deletion, and waits until the
API's consumer has deleted her objects and is blocked on deleting her rows: the middle of
the deletion, made deterministic. The API is killed there (SIGKILL: no shutdown, no
``XACK``), the lock released, and the test checks the half-done state: objects gone, rows
still there, the entry pending. A new API process (another consumer name) takes the entry
over after ``ACCOUNT_DELETION_CLAIM_SECONDS`` and finishes: no row or object of Alice is
left, and every one of Bob's is.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import asyncpg
import httpx
import pytest
import redis.asyncio

from bulwark.common.account_deletions import CONSUMER_GROUP, publish, stream_key

from . import upload_files
from .conftest import RunningStack, StackFactory
from .helpers import MobileUser, bearer, login, register
from .test_account_deletions import TABLES, row_counts

T = TypeVar("T")
CLAIM_SECONDS = 2

pytestmark = [pytest.mark.resilience, pytest.mark.security(stride="T", asvs=("V14.2",))]


@pytest.fixture(scope="module")
def crash_stack(stack_factory: StackFactory) -> RunningStack:
    return stack_factory(env={"api": {"ACCOUNT_DELETION_CLAIM_SECONDS": str(CLAIM_SECONDS)}})


def wait_for(check: Callable[[], T], seconds: float, what: str) -> T:
    """``check()``'s first truthy answer, polled every 0.1 s for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        answer = check()
        if answer:
            return answer
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.1)


def make_data(stack: RunningStack, user: MobileUser, uploads: int) -> dict[str, int]:
    """Two notes (one with an Idempotency-Key) and ``uploads`` uploads of ``user`` through
    the API, the first one completed (checked); the rows expected in each table. There is
    one object file per upload: the PUT ones, and the completed one's checked file (its PUT
    object is deleted on ``complete``)."""
    headers = bearer(login(stack.auth_url, user)["access_token"], user)
    for n in range(2):
        extra = {"Idempotency-Key": f'"{uuid.uuid4()}"'} if n == 0 else {}
        response = httpx.post(
            f"{stack.api_url}/v1/notes",
            json={"title": f"note {n}", "body": "personal"},
            headers={**headers, **extra},
        )
        assert response.status_code == 201, response.text
    data = upload_files.png()
    for n in range(uploads):
        created = httpx.post(
            f"{stack.api_url}/v1/uploads",
            json={"filename": f"p{n}.png", "contentType": "image/png", "size": len(data)},
            headers=headers,
        )
        assert created.status_code == 201, created.text
        put = created.json()["uploadRequest"]
        assert httpx.put(put["url"], content=data, headers=put["headers"]).status_code == 200
        if n == 0:
            upload_id = created.json()["upload"]["id"]
            done = httpx.post(
                f"{stack.api_url}/v1/uploads/{upload_id}/complete", headers=headers, timeout=30
            )
            assert done.status_code == 200, done.text
    return {"notes": 2, "uploads": uploads, "idempotency_keys": 1}


def files_of(stack: RunningStack, user: MobileUser) -> list[Path]:
    root = stack.config.uploads_dir
    return [
        path
        for folder in (root / "uploads" / user.user_id, root / "files" / user.user_id)
        if folder.exists()
        for path in folder.iterdir()
    ]


async def _counts(stack: RunningStack, user: MobileUser) -> dict[str, int]:
    conn = await asyncpg.connect(stack.databases["api"], timeout=10)
    try:
        return await row_counts(conn, uuid.UUID(user.user_id))
    finally:
        await conn.close()


def counts(stack: RunningStack, user: MobileUser) -> dict[str, int]:
    return asyncio.run(_counts(stack, user))


async def _pending(stack: RunningStack) -> dict[str, int]:
    """Pending entries of the stream per consumer name."""
    client = redis.asyncio.Redis.from_url(stack.config.redis_url, socket_timeout=5)
    try:
        summary = await client.xpending(stream_key(stack.config.session_key_prefix), CONSUMER_GROUP)
        return {c["name"].decode(): int(c["pending"]) for c in summary["consumers"]}
    finally:
        await client.aclose()


async def _publish(stack: RunningStack, user: MobileUser) -> str:
    client = redis.asyncio.Redis.from_url(stack.config.redis_url, socket_timeout=5)
    try:
        return await publish(
            client, stack.config.session_key_prefix, uuid.UUID(user.user_id), datetime.now(UTC)
        )
    finally:
        await client.aclose()


async def _blocked_delete(conn: asyncpg.Connection) -> bool:
    """Whether another session waits on a lock in a DELETE of uploads (the consumer's)."""
    waiting: int = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND query LIKE 'DELETE FROM uploads WHERE owner_id%' AND pid <> pg_backend_pid()"
    )
    return waiting > 0


def test_the_api_killed_mid_deletion_completes_it_when_back(crash_stack: RunningStack) -> None:
    stack = crash_stack
    alice, bob = register(stack.auth_url), register(stack.auth_url)
    expected_alice = make_data(stack, alice, uploads=5)
    expected_bob = make_data(stack, bob, uploads=2)
    assert len(files_of(stack, alice)) == 5
    bob_files = sorted(files_of(stack, bob))
    bob_rows = counts(stack, bob)
    assert bob_rows == {**expected_bob, "anomaly_flags": 0}

    async def kill_mid_deletion() -> None:
        lock = await asyncpg.connect(stack.databases["api"], timeout=10)
        try:
            async with lock.transaction():
                await lock.execute(
                    "SELECT id FROM uploads WHERE owner_id = $1 FOR UPDATE",
                    uuid.UUID(alice.user_id),
                )
                await _publish(stack, alice)
                deadline = time.monotonic() + 20
                while files_of(stack, alice) or not await _blocked_delete(lock):
                    assert time.monotonic() < deadline, "the consumer never reached the rows"
                    await asyncio.sleep(0.05)
                pid = stack.stack.pid("api")
                os.killpg(pid, signal.SIGKILL)  # the API and any child it has
                await asyncio.sleep(0.2)
        finally:
            await lock.close()  # the lock ends with it (rolled back)

    asyncio.run(kill_mid_deletion())
    stack.stack.stop_service("api")  # reap the dead one
    # Half done: Alice's objects are gone, her rows are not, the entry is still pending in
    # the dead consumer's hands.
    assert files_of(stack, alice) == []
    assert counts(stack, alice) == {**expected_alice, "anomaly_flags": 0}
    assert sum(asyncio.run(_pending(stack)).values()) == 1

    started = time.monotonic()
    stack.stack.start_service("api")
    wait_for(
        lambda: counts(stack, alice) == dict.fromkeys(TABLES, 0),
        30,
        "Alice's rows deleted by the restarted API",
    )
    assert time.monotonic() - started < 30
    assert files_of(stack, alice) == []
    wait_for(lambda: sum(asyncio.run(_pending(stack)).values()) == 0, 10, "the entry acknowledged")
    # Bob's data is all there, and still served.
    assert sorted(files_of(stack, bob)) == bob_files
    assert counts(stack, bob) == bob_rows
    headers = bearer(login(stack.auth_url, bob)["access_token"], bob)
    listed = httpx.get(f"{stack.api_url}/v1/notes", headers=headers)
    assert listed.status_code == 200
    assert len(listed.json()["items"]) == 2
    deleted = [
        line
        for line in (json.loads(text) for text in stack.log("api").splitlines() if text[:1] == "{")
        if line.get("event") == "account_data_deleted"
    ]
    # Once, by the restarted process: the objects had gone before the crash.
    assert [(d["user_id"], d["objects"], d["uploads"], d["notes"]) for d in deleted] == [
        (alice.user_id, 0, 5, 2)
    ]
