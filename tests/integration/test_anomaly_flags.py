"""Anomaly flags (docs/anomalies.md): a login from a new country after a long inactivity, a
burst of requests far above the account's usual rate, repeated attempts at other users'
notes. Each is stored with its evidence in its service's own ``anomaly_flags``, listed by
``bulwark-{auth,api} flags``, and never blocks the user.

One stack for the module: the auth service trusts 127.0.0.1 as its ingress (so this test's
``CloudFront-Viewer-Country`` headers are believed from there, and from 127.0.0.2 they are
not), the API has low thresholds. Detectors run in the background, so the tests poll.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
import redis
import redis.asyncio

from bulwark.api.anomalies.bursts import BurstCounter
from bulwark.devstack.stack import console_script

from .conftest import RunningStack, StackFactory
from .helpers import MobileUser, bearer, login, register

pytestmark = pytest.mark.security(stride="R", asvs=("V16.3",))

T = TypeVar("T")
COUNTRY = "CloudFront-Viewer-Country"
BURST_FLOOR = 20
BURST_WINDOW = 3600  # long, so a test's requests rarely straddle two windows
FOREIGN_THRESHOLD = 3


@pytest.fixture(scope="module")
def flag_stack(stack_factory: StackFactory) -> RunningStack:
    """A stack whose auth trusts 127.0.0.1 as its ingress and whose API flags early."""
    return stack_factory(
        env={
            "auth": {"TRUSTED_PROXIES": "127.0.0.1/32"},
            "api": {
                "ANOMALY_BURST_FLOOR": str(BURST_FLOOR),
                "ANOMALY_BURST_WINDOW_SECONDS": str(BURST_WINDOW),
                "ANOMALY_FOREIGN_THRESHOLD": str(FOREIGN_THRESHOLD),
            },
        }
    )


def _db(url: str, sql: str, *args: object) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(url)
        try:
            return [dict(row) for row in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


def _flags(url: str, user_id: str, kind: str) -> list[dict[str, Any]]:
    rows = _db(
        url,
        "SELECT id, kind, status, evidence::text AS evidence FROM anomaly_flags"
        " WHERE user_id = $1 AND kind = $2 ORDER BY id",
        uuid.UUID(user_id),
        kind,
    )
    return [{**row, "evidence": json.loads(row["evidence"])} for row in rows]


def _wait_for(probe: Callable[[], T], what: str, timeout: float = 10.0) -> T:
    """The first truthy value of ``probe()``, polled until ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


# --- new country after a long inactivity (auth) --------------------------------------------


def _login_from(
    stack: RunningStack, user: MobileUser, country: str, *, source: str = "127.0.0.1"
) -> dict[str, Any]:
    """Log in with the ingress's country header, from TCP source address ``source``."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport) as client:
        response = client.post(
            f"{stack.auth_url}/v1/auth/login",
            json={"email": user.email, "password": user.password},
            headers={**user.headers, COUNTRY: country},
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _country(stack: RunningStack, user: MobileUser) -> str | None:
    last = _last_login(stack, user)
    assert last is not None
    country: str | None = last["country"]
    return country


def _last_login(stack: RunningStack, user: MobileUser) -> dict[str, Any] | None:
    rows = _db(
        stack.databases["auth"],
        "SELECT logged_in_at, country FROM last_logins WHERE user_id = $1",
        uuid.UUID(user.user_id),
    )
    return rows[0] if rows else None


def _login_and_wait(
    stack: RunningStack, user: MobileUser, country: str, *, source: str = "127.0.0.1"
) -> dict[str, Any]:
    """`_login_from`, then wait until the detector has recorded this login."""
    before = _last_login(stack, user)
    tokens = _login_from(stack, user, country, source=source)
    _wait_for(
        lambda: (
            (now := _last_login(stack, user)) is not None
            and (before is None or now["logged_in_at"] > before["logged_in_at"])
        ),
        "the login to be recorded",
    )
    return tokens


def _go_inactive(stack: RunningStack, user: MobileUser, days: int) -> None:
    _db(
        stack.databases["auth"],
        "UPDATE last_logins SET logged_in_at = now() - make_interval(days => $2)"
        " WHERE user_id = $1",
        uuid.UUID(user.user_id),
        days,
    )


@pytest.mark.security(stride="S", asvs=("V6.3",))
def test_login_from_a_new_country_after_inactivity_is_flagged(flag_stack: RunningStack) -> None:
    user = register(flag_stack.auth_url)
    auth_db = flag_stack.databases["auth"]
    _login_and_wait(flag_stack, user, "de")  # first login: recorded (upper-cased), no flag
    assert _country(flag_stack, user) == "DE"
    _login_and_wait(flag_stack, user, "FR")  # a new country without inactivity: no flag
    _go_inactive(flag_stack, user, 45)
    _login_and_wait(flag_stack, user, "FR")  # inactive, same country: no flag
    assert _flags(auth_db, user.user_id, "new_country_after_inactivity") == []

    _go_inactive(flag_stack, user, 40)
    tokens = _login_and_wait(flag_stack, user, "BR")
    flags = _wait_for(
        lambda: _flags(auth_db, user.user_id, "new_country_after_inactivity"), "the flag"
    )
    assert len(flags) == 1
    assert flags[0]["status"] == "open"
    evidence = flags[0]["evidence"]
    assert evidence["previous_country"] == "FR"
    assert evidence["country"] == "BR"
    assert 39.9 <= evidence["days_inactive"] <= 40.1
    assert evidence["client_ip"] == "127.0.0.1"
    assert evidence["last_login_at"].endswith("Z")
    # Never a block: the flagged login's tokens work, and so does the next login.
    me = httpx.get(f"{flag_stack.api_url}/v1/me", headers=bearer(tokens["access_token"], user))
    assert me.status_code == 200
    _login_from(flag_stack, user, "BR")


@pytest.mark.security(stride="S", asvs=("V4.1",))
def test_country_header_from_an_untrusted_peer_is_ignored(flag_stack: RunningStack) -> None:
    user = register(flag_stack.auth_url)
    _login_and_wait(flag_stack, user, "DE")
    _go_inactive(flag_stack, user, 60)
    # The same header from 127.0.0.2, which is not a trusted proxy: the client wrote it.
    _login_and_wait(flag_stack, user, "BR", source="127.0.0.2")
    assert _country(flag_stack, user) == "DE"
    assert _flags(flag_stack.databases["auth"], user.user_id, "new_country_after_inactivity") == []
    # And a malformed value from the trusted ingress is no country either.
    _go_inactive(flag_stack, user, 60)
    _login_and_wait(flag_stack, user, "Brazil")
    assert _country(flag_stack, user) == "DE"
    assert _flags(flag_stack.databases["auth"], user.user_id, "new_country_after_inactivity") == []


# --- bursts (api) ----------------------------------------------------------------------------


def _burst_count(stack: RunningStack, user: MobileUser) -> int:
    client = redis.Redis.from_url(stack.config.redis_url)
    try:
        key = f"{stack.config.session_key_prefix}anomaly:burst:{{{user.user_id}}}"
        count = client.hget(key, "count")
    finally:
        client.close()
    return int(count) if count else 0


def _fresh_window() -> None:
    """Wait, if needed, so the next few seconds of requests fall in one burst window."""
    into = time.time() % BURST_WINDOW
    if into > BURST_WINDOW - 10:
        time.sleep(BURST_WINDOW - into + 0.1)


def test_burst_far_above_the_usual_rate_is_flagged_once_and_never_blocks(
    flag_stack: RunningStack,
) -> None:
    api_db = flag_stack.databases["api"]
    calm, busy = register(flag_stack.auth_url), register(flag_stack.auth_url)
    calm_token, busy_token = login(flag_stack.auth_url, calm), login(flag_stack.auth_url, busy)
    _fresh_window()
    with httpx.Client(base_url=flag_stack.api_url) as client:
        for _ in range(BURST_FLOOR):  # at the floor, not above it
            me = client.get("/v1/me", headers=bearer(calm_token["access_token"], calm))
            assert me.status_code == 200
        statuses = [
            client.get("/v1/me", headers=bearer(busy_token["access_token"], busy)).status_code
            for _ in range(BURST_FLOOR + 10)
        ]
    assert statuses == [200] * (BURST_FLOOR + 10)
    _wait_for(lambda: _burst_count(flag_stack, busy) == BURST_FLOOR + 10, "every request counted")
    _wait_for(lambda: _burst_count(flag_stack, calm) == BURST_FLOOR, "every request counted")
    flags = _wait_for(lambda: _flags(api_db, busy.user_id, "request_burst"), "the flag")
    assert len(flags) == 1  # one flag per burst, not one per request above the threshold
    evidence = flags[0]["evidence"]
    # Counted in batches (BURST_BATCH_SECONDS): the count of the batch that crossed the floor.
    assert BURST_FLOOR < evidence["requests"] <= BURST_FLOOR + 10
    assert evidence["threshold"] == BURST_FLOOR
    assert evidence["baseline"] == 0
    assert evidence["window_seconds"] == BURST_WINDOW
    assert evidence["client_ip"] == "127.0.0.1"
    assert _flags(api_db, calm.user_id, "request_burst") == []


async def test_an_accounts_usual_rate_raises_its_threshold(redis_url: str) -> None:
    """The burst counter itself, against real Redis, with 2-second windows and a baseline
    that is the last active window (alpha 1): floor 5, factor 2."""
    client = redis.asyncio.Redis.from_url(redis_url)
    counter = BurstCounter(
        client,
        key_prefix=f"test:{uuid.uuid4().hex}:",
        window_seconds=2,
        floor=5,
        factor=2.0,
        alpha=1.0,
        cooldown_seconds=2,
    )
    regular, newcomer = str(uuid.uuid4()), str(uuid.uuid4())

    async def next_window() -> None:
        await asyncio.sleep(2 - time.time() % 2 + 0.05)

    try:
        await next_window()
        assert [await counter.observe(regular) for _ in range(5)] == [None] * 5
        await next_window()
        # 5 requests last window: the threshold is now max(5, 2 x 5) = 10 for this account.
        seen = [await counter.observe(regular) for _ in range(11)]
        assert seen[:10] == [None] * 10
        assert seen[10] is not None
        assert (seen[10].requests, seen[10].baseline, seen[10].threshold) == (11, 5.0, 10.0)
        # An account with no history is held to the floor.
        fresh = [await counter.observe(newcomer) for _ in range(6)]
        assert fresh[:5] == [None] * 5
        assert fresh[5] is not None
        assert fresh[5].threshold == 5.0
    finally:
        await client.aclose()


async def test_a_batch_of_counts_adds_up_per_account_in_one_round_trip(redis_url: str) -> None:
    """`BurstCounter.observe_many`, as the API sends a batch (issue 11): each account's
    requests add up, and the batch that crosses the floor is the burst."""
    client = redis.asyncio.Redis.from_url(redis_url)
    counter = BurstCounter(
        client,
        key_prefix=f"test:{uuid.uuid4().hex}:",
        window_seconds=60,
        floor=5,
        factor=2.0,
        alpha=0.05,
        cooldown_seconds=60,
    )
    quiet, busy = str(uuid.uuid4()), str(uuid.uuid4())
    if time.time() % 60 > 55:  # both batches in one window
        await asyncio.sleep(60 - time.time() % 60 + 0.05)
    try:
        first = await counter.observe_many({quiet: 4, busy: 6})
        assert list(first) == [busy]
        assert (first[busy].requests, first[busy].threshold) == (6, 5.0)
        second = await counter.observe_many({quiet: 2, busy: 1})
        assert list(second) == [quiet]  # busy is quiet for its cooldown: one flag per burst
        assert second[quiet].requests == 6
    finally:
        await client.aclose()


# --- attempts at other users' notes (api) ---------------------------------------------------


def _notes_of(stack: RunningStack, user: MobileUser, count: int) -> list[str]:
    tokens = login(stack.auth_url, user)
    ids = []
    for i in range(count):
        created = httpx.post(
            f"{stack.api_url}/v1/notes",
            json={"title": f"private {i}", "body": "mine"},
            headers=bearer(tokens["access_token"], user),
        )
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    return ids


def _foreign_count(stack: RunningStack, user: MobileUser) -> int:
    client = redis.Redis.from_url(stack.config.redis_url)
    try:
        key = f"{stack.config.session_key_prefix}anomaly:foreign:{{{user.user_id}}}:count"
        count = client.get(key)
    finally:
        client.close()
    return int(count) if count else 0


ACTIONS = ("read", "update", "delete")


def _try_notes(
    stack: RunningStack, prober: MobileUser, token: str, attempts: list[tuple[str, str]]
) -> list[httpx.Response]:
    """Each ``(note id, action)`` in turn; every answer must be the plain 404."""
    answers = []
    with httpx.Client(base_url=stack.api_url, headers=bearer(token, prober)) as client:
        for note_id, action in attempts:
            if action == "read":
                answer = client.get(f"/v1/notes/{note_id}")
            elif action == "update":
                # With If-Match: without one, a PATCH is a 428 before any note is looked up.
                answer = client.patch(
                    f"/v1/notes/{note_id}", json={"title": "mine now"}, headers={"If-Match": "*"}
                )
            else:
                answer = client.delete(f"/v1/notes/{note_id}")
            assert answer.status_code == 404
            answers.append(answer)
    return answers


@pytest.mark.security(stride="E", asvs=("V8.2",))
def test_repeated_attempts_at_other_users_notes_are_flagged(flag_stack: RunningStack) -> None:
    api_db = flag_stack.databases["api"]
    owner, prober = register(flag_stack.auth_url), register(flag_stack.auth_url)
    targets = _notes_of(flag_stack, owner, FOREIGN_THRESHOLD)
    token = str(login(flag_stack.auth_url, prober)["access_token"])

    # Ids that exist nowhere (a stale cache) answer the same 404 and do not count.
    unknown = [(str(uuid.uuid4()), action) for action in ACTIONS * 2]
    missing = _try_notes(flag_stack, prober, token, unknown)
    foreign = _try_notes(
        flag_stack, prober, token, [(targets[0], "delete"), (targets[1], "update")]
    )
    assert {a.json()["detail"] for a in missing + foreign} == {"No such note."}
    _wait_for(lambda: _foreign_count(flag_stack, prober) == 2, "two attempts counted")
    assert _flags(api_db, prober.user_id, "foreign_note_attempts") == []

    _try_notes(flag_stack, prober, token, [(targets[2], "read")])  # reaches the threshold
    flags = _wait_for(lambda: _flags(api_db, prober.user_id, "foreign_note_attempts"), "a flag")
    assert len(flags) == 1
    evidence = flags[0]["evidence"]
    assert evidence["attempts"] == FOREIGN_THRESHOLD
    assert evidence["threshold"] == FOREIGN_THRESHOLD
    assert evidence["window_seconds"] == 600
    assert evidence["client_ip"] == "127.0.0.1"
    assert [(t["note_id"], t["owner_id"], t["action"]) for t in evidence["targets"]] == [
        (targets[0], owner.user_id, "delete"),
        (targets[1], owner.user_id, "update"),
        (targets[2], owner.user_id, "read"),
    ]
    # Never a block: the prober's own notes work; the owner's notes are untouched.
    own = _notes_of(flag_stack, prober, 1)
    read = httpx.get(f"{flag_stack.api_url}/v1/notes/{own[0]}", headers=bearer(token, prober))
    assert read.status_code == 200
    owner_token = login(flag_stack.auth_url, owner)["access_token"]
    listed = httpx.get(f"{flag_stack.api_url}/v1/notes", headers=bearer(owner_token, owner))
    assert len(listed.json()["items"]) == FOREIGN_THRESHOLD


def _failed_checks(stack: RunningStack) -> list[dict[str, Any]]:
    lines = (json.loads(line) for line in stack.log("api").splitlines() if line.startswith("{"))
    return [
        line
        for line in lines
        if line.get("event") == "background_check_failed" and line["check"] == "foreign_note"
    ]


@pytest.mark.security(stride="D", asvs=("V16.5",))
def test_a_failing_detector_never_fails_the_request(flag_stack: RunningStack) -> None:
    """With flags refused by the database, the requests that trip the detector still get
    their usual answers, and the failure is logged."""
    api_db = flag_stack.databases["api"]
    owner, prober = register(flag_stack.auth_url), register(flag_stack.auth_url)
    targets = _notes_of(flag_stack, owner, FOREIGN_THRESHOLD)
    token = str(login(flag_stack.auth_url, prober)["access_token"])
    _db(api_db, "ALTER TABLE anomaly_flags ADD CONSTRAINT test_refuse CHECK (false) NOT VALID")
    try:
        _try_notes(flag_stack, prober, token, list(zip(targets, ACTIONS, strict=True)))
        _wait_for(lambda: _failed_checks(flag_stack), "the failure to be logged")
        me = httpx.get(f"{flag_stack.api_url}/v1/me", headers=bearer(token, prober))
        assert me.status_code == 200
    finally:
        _db(api_db, "ALTER TABLE anomaly_flags DROP CONSTRAINT test_refuse")
    assert _flags(api_db, prober.user_id, "foreign_note_attempts") == []


# --- the operator's command ----------------------------------------------------------------


def _flags_command(service: str, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603  # our own console script
        [console_script(f"bulwark-{service}"), "flags", *args],
        env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def flagged_prober(flag_stack: RunningStack) -> MobileUser:
    """A user with one ``foreign_note_attempts`` flag in the API's database."""
    owner, prober = register(flag_stack.auth_url), register(flag_stack.auth_url)
    targets = _notes_of(flag_stack, owner, FOREIGN_THRESHOLD)
    token = str(login(flag_stack.auth_url, prober)["access_token"])
    _try_notes(flag_stack, prober, token, list(zip(targets, ACTIONS, strict=True)))
    _wait_for(
        lambda: _flags(flag_stack.databases["api"], prober.user_id, "foreign_note_attempts"),
        "the flag",
    )
    return prober


def test_flags_command_lists_and_reviews(
    flag_stack: RunningStack, flagged_prober: MobileUser
) -> None:
    api_db = flag_stack.databases["api"]
    listed = _flags_command("api", api_db, "list", "--user", flagged_prober.user_id, "--json")
    assert listed.returncode == 0, listed.stderr
    flags = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(f["user_id"], f["kind"], f["status"]) for f in flags] == [
        (flagged_prober.user_id, "foreign_note_attempts", "open")
    ]
    assert flags[0]["evidence"]["attempts"] == FOREIGN_THRESHOLD

    text = _flags_command("api", api_db, "list", "--kind", "foreign_note_attempts")
    assert text.returncode == 0, text.stderr
    header, *rows = text.stdout.splitlines()
    assert header.split("\t") == ["id", "detected_at", "status", "kind", "user_id", "evidence"]
    mine = [row.split("\t") for row in rows if flagged_prober.user_id in row]
    assert len(mine) == 1
    assert mine[0][0] == str(flags[0]["id"])
    assert json.loads(mine[0][5])["threshold"] == FOREIGN_THRESHOLD

    flag_id = str(flags[0]["id"])
    reviewed = _flags_command("api", api_db, "review", flag_id, "--note", "tester, not abuse")
    assert reviewed.returncode == 0, reviewed.stderr
    again = _flags_command("api", api_db, "review", flag_id)
    assert again.returncode == 1
    after = _flags_command(
        "api", api_db, "list", "--user", flagged_prober.user_id, "--status", "reviewed", "--json"
    )
    [flag] = [json.loads(line) for line in after.stdout.splitlines()]
    assert (flag["status"], flag["review_note"]) == ("reviewed", "tester, not abuse")

    # The auth service's command reads the auth database's flags the same way.
    auth = _flags_command(
        "auth", flag_stack.databases["auth"], "list", "--kind", "new_country_after_inactivity"
    )
    assert auth.returncode == 0, auth.stderr
    assert auth.stdout.splitlines()[0].startswith("id\tdetected_at")
