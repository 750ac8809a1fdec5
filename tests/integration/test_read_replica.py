"""The API's read replica (``DATABASE_READ_URL``) against a real streaming replica (issue 10).

The API database lives on a throwaway primary with a hot standby (`StreamingReplica`); the
API reads from the standby. Replay is paused on the standby to open a visible lag:

- a note written straight into the primary (not through the API, so no write position is
  kept for its owner) is missing from its owner's list and read while replay is paused, and
  shows up once replay resumes: the reads really run on the replica (read from the primary,
  it would be there at once);
- a user who creates, updates or deletes a note through the API sees the result at once
  on their next read, although the replica has not replayed it: read-your-writes (each
  kind of write on its own pause, so each must keep its own position);
- with the standby stopped, reads still answer 200 from the primary, the replica's outage
  is logged once and each read sent to the primary is counted; once the standby is back,
  reads return to it;
- a stalled standby (SIGSTOP) costs one read the database timeout, then reads skip it for
  ``REPLICA_RETRY_SECONDS``;
- with Redis down (no write position can be read), a writer's reads go to the primary and
  still see their write;
- a replica lagging past ``REPLICA_MAX_LAG_SECONDS`` is skipped for every reader, writer or
  not: staleness is bounded.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from bulwark.api.replica import REPLICA_RETRY_SECONDS
from bulwark.devstack.databases import create_databases, database_url

from .conftest import RunningStack, StackFactory
from .helpers import MobileUser, bearer, login, register
from .outages import ThrowawayRedis, resume, stall
from .prometheus import scrape, value
from .streaming_replica import StreamingReplica

pytestmark = pytest.mark.resilience

DB_TIMEOUT = 1.0
#: Longest wait for the replica to show a write after replay resumes, in seconds.
CATCH_UP = 15.0


@pytest.fixture(scope="module")
def cluster(embedded_dir: Path) -> Iterator[StreamingReplica]:
    with StreamingReplica(embedded_dir / f"replica-{secrets.token_hex(4)}") as replica:
        yield replica


@pytest.fixture(scope="module")
def own(stack_factory: StackFactory, cluster: StreamingReplica) -> Iterator[RunningStack]:
    name = f"bulwark_api_r{secrets.token_hex(4)}"
    primary_url = asyncio.run(create_databases(cluster.primary.url, [name]))[name]
    replica_url = database_url(cluster.standby.url, name)
    env = {"DATABASE_TIMEOUT_SECONDS": str(DB_TIMEOUT), "DATABASE_READ_URL": replica_url}
    stack = stack_factory(databases={"api": primary_url}, env={"api": env})
    yield stack
    stack.stack.stop()  # before the module's Postgres servers stop


@pytest.fixture(scope="module")
def redis_stack(
    stack_factory: StackFactory, own: RunningStack, throwaway_redis: ThrowawayRedis
) -> Iterator[RunningStack]:
    """A second stack on the same API database and replica, whose services use a Redis the
    test may stop; the API serves while the revocation check cannot be made."""
    redis_env = {"REDIS_URL": throwaway_redis.url}
    api_env = {
        **redis_env,
        "REVOCATION_FAILURE_MODE": "allow",
        "DATABASE_TIMEOUT_SECONDS": str(DB_TIMEOUT),
        "DATABASE_READ_URL": own.env["api"]["DATABASE_READ_URL"],
    }
    stack = stack_factory(
        databases={"api": own.databases["api"]},
        env={"ratelimit": redis_env, "auth": redis_env, "api": api_env},
    )
    yield stack
    stack.stack.stop()


#: The lag bound of the `bounded` stack, in seconds.
MAX_LAG = 3


@pytest.fixture(scope="module")
def bounded(stack_factory: StackFactory, own: RunningStack) -> Iterator[RunningStack]:
    """A second stack on the same API database and replica, with a short lag bound."""
    api_env = {
        "DATABASE_TIMEOUT_SECONDS": str(DB_TIMEOUT),
        "DATABASE_READ_URL": own.env["api"]["DATABASE_READ_URL"],
        "REPLICA_MAX_LAG_SECONDS": str(MAX_LAG),
    }
    stack = stack_factory(databases={"api": own.databases["api"]}, env={"api": api_env})
    yield stack
    stack.stack.stop()


class Client:
    """A logged-in user of the API."""

    def __init__(self, stack: RunningStack) -> None:
        self.user: MobileUser = register(stack.auth_url)
        self.headers = bearer(login(stack.auth_url, self.user)["access_token"], self.user)
        self.api = stack.api_url

    def call(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        return httpx.request(  # type: ignore[arg-type]
            method, f"{self.api}/v1/notes{path}", headers=self.headers, timeout=30, **kwargs
        )

    def titles(self) -> set[str]:
        response = self.call("GET", "", params={"limit": 100})
        assert response.status_code == 200, response.text
        return {item["title"] for item in response.json()["items"]}

    def create(self, title: str) -> str:
        response = self.call("POST", "", json={"title": title})
        assert response.status_code == 201, response.text
        note_id: str = response.json()["id"]
        return note_id


def _insert_on_primary(stack: RunningStack, owner: str) -> tuple[str, str]:
    """A note for ``owner`` written straight into the primary; its id and title."""
    note_id, title = uuid.uuid4(), f"written elsewhere {secrets.token_hex(4)}"

    async def insert() -> None:
        conn = await asyncpg.connect(stack.databases["api"], timeout=10)
        try:
            await conn.execute(
                "INSERT INTO notes (id, owner_id, title, body) VALUES ($1, $2, $3, '')",
                note_id,
                uuid.UUID(owner),
                title,
            )
        finally:
            await conn.close(timeout=10)

    asyncio.run(insert())
    return str(note_id), title


def _eventually(check: object) -> bool:
    assert callable(check)
    deadline = time.monotonic() + CATCH_UP
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_reads_run_on_the_replica_and_writers_read_their_writes(
    own: RunningStack, cluster: StreamingReplica
) -> None:
    reader, writer = Client(own), Client(own)
    kept, doomed = writer.create("kept"), writer.create("doomed")
    cluster.wait_caught_up()

    cluster.pause_replay()
    try:
        elsewhere_id, elsewhere = _insert_on_primary(own, reader.user.user_id)
        # Routing: the replica has not replayed it, and the reader kept no write position.
        assert elsewhere not in reader.titles()
        assert reader.call("GET", f"/{elsewhere_id}").status_code == 404
        # Read-your-writes, a delete: the replica still has the note.
        assert writer.call("DELETE", f"/{doomed}").status_code == 204
        assert writer.call("GET", f"/{doomed}").status_code == 404
        assert "doomed" not in writer.titles()
    finally:
        cluster.resume_replay()
    assert _eventually(lambda: elsewhere in reader.titles()), "the replica never showed it"
    assert reader.call("GET", f"/{elsewhere_id}").status_code == 200
    cluster.wait_caught_up()

    cluster.pause_replay()
    try:
        response = httpx.patch(
            f"{writer.api}/v1/notes/{kept}",
            json={"title": "kept, renamed"},
            headers={**writer.headers, "If-Match": "*"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        read = writer.call("GET", f"/{kept}")
        assert read.status_code == 200
        assert read.json()["title"] == "kept, renamed"
        assert writer.titles() == {"kept, renamed"}
    finally:
        cluster.resume_replay()
    cluster.wait_caught_up()

    cluster.pause_replay()
    try:
        fresh = writer.create("fresh")
        assert writer.call("GET", f"/{fresh}").status_code == 200
        assert writer.titles() == {"kept, renamed", "fresh"}
        # Another user's lag is still there: the reader's reads stay on the paused replica.
        _, later = _insert_on_primary(own, reader.user.user_id)
        assert later not in reader.titles()
    finally:
        cluster.resume_replay()


def _replica_outages(stack: RunningStack, event: str) -> int:
    return sum(
        1
        for line in stack.log("api").splitlines()
        if f'"event":"{event}"' in line and '"pool":"replica"' in line
    )


def test_a_dead_replica_sends_reads_to_the_primary_logged_once_and_counted(
    own: RunningStack, cluster: StreamingReplica
) -> None:
    user = Client(own)
    user.create("before the outage")
    cluster.wait_caught_up()
    _, series = scrape(own, "api")
    fallbacks = value(series, "bulwark_db_replica_fallbacks_total", reason="replica_unavailable")
    warnings = _replica_outages(own, "database_unavailable")

    cluster.standby.stop()
    try:
        for _ in range(3):
            started = time.monotonic()
            assert user.titles() == {"before the outage"}
            assert time.monotonic() - started < 2 * DB_TIMEOUT + 1
        assert user.call("GET", f"/{user.create('during the outage')}").status_code == 200
        assert user.titles() == {"before the outage", "during the outage"}
        assert _replica_outages(own, "database_unavailable") == warnings + 1
        _, series = scrape(own, "api")
        now = value(series, "bulwark_db_replica_fallbacks_total", reason="replica_unavailable")
        assert now >= fallbacks + 4
    finally:
        cluster.standby.start()

    # Back on the replica once the skip period is over: a lag shows again.
    cluster.wait_caught_up()
    time.sleep(REPLICA_RETRY_SECONDS + 0.5)
    cluster.pause_replay()
    try:
        _, elsewhere = _insert_on_primary(own, user.user.user_id)
        assert elsewhere not in user.titles()
        assert _replica_outages(own, "database_recovered") == 1
    finally:
        cluster.resume_replay()


def test_a_stalled_replica_costs_one_timeout_then_is_skipped(
    own: RunningStack, cluster: StreamingReplica
) -> None:
    user = Client(own)
    user.create("stalled")
    cluster.wait_caught_up()
    stall(cluster.standby)
    try:
        started = time.monotonic()
        assert user.titles() == {"stalled"}  # the replica timed out; the primary answered
        assert DB_TIMEOUT <= time.monotonic() - started < 2 * DB_TIMEOUT + 1
        for _ in range(3):  # within REPLICA_RETRY_SECONDS: straight to the primary
            started = time.monotonic()
            assert user.titles() == {"stalled"}
            assert time.monotonic() - started < DB_TIMEOUT / 2
    finally:
        resume(cluster.standby)


def test_without_redis_a_writers_reads_go_to_the_primary(
    redis_stack: RunningStack, cluster: StreamingReplica, throwaway_redis: ThrowawayRedis
) -> None:
    writer = Client(redis_stack)
    cluster.wait_caught_up()
    _, series = scrape(redis_stack, "api")
    before = value(series, "bulwark_db_replica_fallbacks_total", reason="positions_unavailable")
    cluster.pause_replay()
    try:
        fresh = writer.create("written before Redis went")
        throwaway_redis.stop()
        try:
            assert writer.call("GET", f"/{fresh}").status_code == 200
            assert writer.titles() == {"written before Redis went"}
            _, series = scrape(redis_stack, "api")
            after = value(
                series, "bulwark_db_replica_fallbacks_total", reason="positions_unavailable"
            )
            assert after >= before + 2
        finally:
            throwaway_redis.start()
    finally:
        cluster.resume_replay()


def test_a_replica_lagging_past_the_bound_is_skipped_for_every_reader(
    bounded: RunningStack, cluster: StreamingReplica
) -> None:
    reader = Client(bounded)  # writes nothing through the API: no position of its own
    cluster.wait_caught_up()
    time.sleep(MAX_LAG + 1.5)  # the API has samples older than the bound
    _, series = scrape(bounded, "api")
    behind = value(series, "bulwark_db_replica_fallbacks_total", reason="replica_behind")
    cluster.pause_replay()
    try:
        _, title = _insert_on_primary(bounded, reader.user.user_id)
        inserted = time.monotonic()
        first = reader.titles()
        if time.monotonic() - inserted < MAX_LAG:
            # Within the bound the replica's lag is allowed: the read ran there.
            assert title not in first
        # Past it, the replica has not replayed what the primary had MAX_LAG seconds ago:
        # every read goes to the primary, though replay is still paused.
        assert _eventually(lambda: title in reader.titles()), "the stale replica kept serving"
        assert time.monotonic() - inserted < MAX_LAG + 5
        _, series = scrape(bounded, "api")
        assert value(series, "bulwark_db_replica_fallbacks_total", reason="replica_behind") > behind
    finally:
        cluster.resume_replay()
