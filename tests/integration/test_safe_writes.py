"""Safe writes over bad networks (docs/safe-writes.md): ``Idempotency-Key`` on creates,
``ETag``/``If-Match`` on notes, and the fields a PATCH may not touch. Real services on the
session's stack; the database is read and prodded directly where a rule is about rows."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from bulwark.api.idempotency import SWEEP_SECONDS, sweep_forever
from bulwark.common.db import open_database

from .conftest import RunningStack
from .helpers import PROBLEM, MobileUser, bearer, login, register

KEY = "Idempotency-Key"


def _user(stack: RunningStack) -> tuple[MobileUser, dict[str, str]]:
    user = register(stack.auth_url)
    return user, bearer(login(stack.auth_url, user)["access_token"], user)


def _new_key() -> str:
    return f'"{uuid.uuid4()}"'


async def _fetch(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
        return rows
    finally:
        await conn.close()


def _db(stack: RunningStack, sql: str, *args: object) -> list[asyncpg.Record]:
    return asyncio.run(_fetch(stack.databases["api"], sql, *args))


async def _count_notes(stack: RunningStack, user: MobileUser) -> int:
    rows = await _fetch(
        stack.databases["api"],
        "SELECT count(*) AS n FROM notes WHERE owner_id = $1",
        uuid.UUID(user.user_id),
    )
    count: int = rows[0]["n"]
    return count


def _note_count(stack: RunningStack, user: MobileUser) -> int:
    return asyncio.run(_count_notes(stack, user))


def _assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


# --- Idempotency-Key -------------------------------------------------------------------------


@pytest.mark.security(stride="T", asvs=("V2.3",))
def test_a_retry_gets_the_first_answer_and_creates_nothing(stack: RunningStack) -> None:
    user, headers = _user(stack)
    key = {KEY: _new_key()}
    url = f"{stack.api_url}/v1/notes"
    first = httpx.post(url, json={"title": "Groceries", "body": "milk"}, headers={**headers, **key})
    assert first.status_code == 201, first.text
    # The same request, spelt differently (key order, spacing): the same fingerprint.
    again = httpx.post(
        url,
        content=b'{ "body" : "milk",  "title":"Groceries" }',
        headers={**headers, **key, "Content-Type": "application/json"},
    )
    assert again.status_code == 201, again.text
    assert again.json() == first.json()
    for name in ("Location", "ETag"):
        assert again.headers[name] == first.headers[name]
    assert first.headers["Location"] == f"/v1/notes/{first.json()['id']}"
    assert _note_count(stack, user) == 1
    # The note changes; a late retry still gets the first answer (the draft's "result of the
    # previously completed operation"), and still creates nothing.
    note = f"{url}/{first.json()['id']}"
    changed = httpx.patch(note, json={"body": "eggs"}, headers={**headers, "If-Match": '"1"'})
    assert changed.status_code == 200, changed.text
    late = httpx.post(url, json={"title": "Groceries", "body": "milk"}, headers={**headers, **key})
    assert (late.status_code, late.json()) == (201, first.json())
    assert _note_count(stack, user) == 1
    # What is kept: the answer's body and its Location and ETag, no request header.
    [kept] = _db(
        stack,
        "SELECT status, headers::text AS headers FROM idempotency_keys WHERE owner_id = $1",
        uuid.UUID(user.user_id),
    )
    assert kept["status"] == 201
    assert "Bearer" not in kept["headers"]
    assert set(json.loads(kept["headers"])) == {"Location", "ETag"}


@pytest.mark.security(stride="T", asvs=("V2.3",))
def test_the_same_key_with_another_request_is_422(stack: RunningStack) -> None:
    user, headers = _user(stack)
    key = {KEY: _new_key()}
    url = f"{stack.api_url}/v1/notes"
    first = httpx.post(url, json={"title": "one"}, headers={**headers, **key})
    assert first.status_code == 201, first.text
    other = httpx.post(url, json={"title": "two"}, headers={**headers, **key})
    problem = _assert_problem(other, 422)
    assert problem["type"] == "urn:bulwark:problem:idempotency-key-reused"
    assert "Idempotency-Key" in problem["detail"]
    assert _note_count(stack, user) == 1
    # The first answer is still the one kept.
    assert httpx.post(url, json={"title": "one"}, headers={**headers, **key}).json() == first.json()


@pytest.mark.security(stride="IE", asvs=("V8.2",))
def test_keys_are_per_user(stack: RunningStack) -> None:
    alice, as_alice = _user(stack)
    mallory, as_mallory = _user(stack)
    key = {KEY: _new_key()}
    url = f"{stack.api_url}/v1/notes"
    alices = httpx.post(url, json={"title": "same"}, headers={**as_alice, **key})
    mallorys = httpx.post(url, json={"title": "same"}, headers={**as_mallory, **key})
    assert (alices.status_code, mallorys.status_code) == (201, 201)
    assert mallorys.json()["id"] != alices.json()["id"]  # her own note, not Alice's answer
    # A different body under Alice's key is no 422 for Mallory either: her key is her own.
    assert httpx.post(url, json={"title": "x"}, headers={**as_mallory, KEY: _new_key()}).is_success
    assert (_note_count(stack, alice), _note_count(stack, mallory)) == (1, 2)


def test_a_refused_create_is_not_kept(stack: RunningStack) -> None:
    """A 400 changed nothing: the corrected request under the same key is a first one."""
    user, headers = _user(stack)
    key = {KEY: _new_key()}
    url = f"{stack.api_url}/v1/notes"
    refused = httpx.post(url, json={"title": "bell\u0007"}, headers={**headers, **key})
    _assert_problem(refused, 400)
    fixed = httpx.post(url, json={"title": "bell"}, headers={**headers, **key})
    assert fixed.status_code == 201, fixed.text
    again = httpx.post(url, json={"title": "bell"}, headers={**headers, **key})
    assert again.json()["id"] == fixed.json()["id"]
    assert _note_count(stack, user) == 1


@pytest.fixture(scope="module")
def refused_user(stack: RunningStack) -> tuple[MobileUser, dict[str, str]]:
    """One user for every malformed key: none of them may create a note."""
    return _user(stack)


@pytest.mark.security(stride="T", asvs=("V2.2",))
@pytest.mark.parametrize(
    "value",
    [
        b"unquoted-key",
        b'""',
        b'"' + b"k" * 256 + b'"',
        b'"caf\xc3\xa9"',
        b'"a" "b"',
        b"1",
    ],
    ids=["token", "empty", "256 characters", "not ASCII", "two items", "integer"],
)
def test_malformed_keys_are_400(
    stack: RunningStack, refused_user: tuple[MobileUser, dict[str, str]], value: bytes
) -> None:
    user, headers = refused_user
    response = httpx.post(
        f"{stack.api_url}/v1/notes", json={"title": "t"}, headers={**headers, KEY: value}
    )
    assert "Idempotency-Key" in _assert_problem(response, 400)["detail"]
    assert _note_count(stack, user) == 0


def test_key_length_bounds_and_repeated_fields(stack: RunningStack) -> None:
    user, headers = _user(stack)
    url = f"{stack.api_url}/v1/notes"
    longest = {KEY: '"' + "k" * 255 + '"'}
    assert httpx.post(url, json={"title": "t"}, headers={**headers, **longest}).status_code == 201
    # Two field lines are one list of two items: not an Item.
    twice = [*headers.items(), (KEY, '"a"'), (KEY, '"a"')]
    _assert_problem(httpx.post(url, json={"title": "t"}, headers=twice), 400)
    assert _note_count(stack, user) == 1


async def _wait_until_blocked(url: str, statement_start: str) -> None:
    """Return once a session of the API waits on a lock in a statement starting with
    ``statement_start`` (at most 5 s)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = await _fetch(
            url,
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE $1",
            statement_start + "%",
        )
        if rows:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the first request never reached its write")


async def test_a_request_whose_key_is_in_flight_gets_409(stack: RunningStack) -> None:
    """The first request is held inside its transaction (its answer cannot be stored while
    the test holds a conflicting, uncommitted row); a second with the same key gets 409 at
    once, the first then completes, and a third gets the first's answer."""
    user, headers = _user(stack)
    key_name = f"in-flight-{secrets.token_hex(4)}"
    key, api_db = {KEY: f'"{key_name}"'}, stack.databases["api"]
    blocker = await asyncpg.connect(api_db, timeout=10)
    try:
        held = blocker.transaction()
        await held.start()
        await blocker.execute(
            "INSERT INTO idempotency_keys (owner_id, key, fingerprint, status, headers, body,"
            " expires_at) VALUES ($1, $2, $3, 201, '{}', '', now())",
            uuid.UUID(user.user_id),
            key_name,
            bytes(32),
        )
        async with httpx.AsyncClient(base_url=stack.api_url, headers=headers, timeout=10) as api:
            first = asyncio.create_task(api.post("/v1/notes", json={"title": "t"}, headers=key))
            await _wait_until_blocked(api_db, "INSERT INTO idempotency_keys")
            second = await api.post("/v1/notes", json={"title": "t"}, headers=key)
            problem = _assert_problem(second, 409)
            assert problem["type"] == "urn:bulwark:problem:idempotency-key-in-use"
            assert second.headers["Retry-After"] == "1"
            await held.rollback()
            answered = await first
            assert answered.status_code == 201, answered.text
            third = await api.post("/v1/notes", json={"title": "t"}, headers=key)
            assert (third.status_code, third.json()) == (201, answered.json())
    finally:
        await blocker.close()
    assert await _count_notes(stack, user) == 1


@pytest.mark.security(stride="T", asvs=("V15.4",))
async def test_concurrent_retries_execute_once(stack: RunningStack) -> None:
    user, headers = _user(stack)
    key = {KEY: _new_key()}
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers, timeout=10) as api:
        answers = await asyncio.gather(
            *(api.post("/v1/notes", json={"title": "burst"}, headers=key) for _ in range(20))
        )
    created = [a for a in answers if a.status_code == 201]
    assert created, [a.status_code for a in answers]
    assert {a.json()["id"] for a in created} == {created[0].json()["id"]}
    for answer in answers:
        assert answer.status_code in {201, 409}, answer.text
        if answer.status_code == 409:
            _assert_problem(answer, 409)
    assert await _count_notes(stack, user) == 1


async def test_expired_keys_run_again_and_are_swept(stack: RunningStack) -> None:
    """A key past its 24 h is a new key; the sweep deletes expired keys and keeps the rest."""
    user, headers = _user(stack)
    key, api_db = {KEY: _new_key()}, stack.databases["api"]
    owner = uuid.UUID(user.user_id)
    backdate = (
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours',"
        " expires_at = now() - interval '1 hour' WHERE owner_id = $1 AND key = $2"
    )
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers, timeout=10) as api:
        first = await api.post("/v1/notes", json={"title": "t"}, headers=key)
        await _fetch(api_db, backdate, owner, key[KEY].strip('"'))
        later = await api.post("/v1/notes", json={"title": "t"}, headers=key)
        assert later.status_code == 201, later.text
        assert later.json()["id"] != first.json()["id"]
        kept = await api.post("/v1/notes", json={"title": "kept"}, headers={KEY: _new_key()})
        assert kept.status_code == 201
    assert await _count_notes(stack, user) == 3
    await _fetch(api_db, backdate, owner, key[KEY].strip('"'))

    async def keys() -> int:
        rows = await _fetch(api_db, "SELECT key FROM idempotency_keys WHERE owner_id = $1", owner)
        return len(rows)

    db = await open_database(api_db, max_size=1, timeout_seconds=3)
    sweeper = asyncio.create_task(sweep_forever(db))
    try:
        deadline = time.monotonic() + min(5, SWEEP_SECONDS)
        while await keys() != 1:
            assert time.monotonic() < deadline, "the expired key was never swept"
            await asyncio.sleep(0.05)
    finally:
        sweeper.cancel()
        await asyncio.gather(sweeper, return_exceptions=True)
        await db.close()


# --- ETag and If-Match -----------------------------------------------------------------------


@pytest.mark.security(stride="T", asvs=("V2.3",))
def test_notes_carry_strong_etags_and_patch_requires_if_match(stack: RunningStack) -> None:
    _, headers = _user(stack)
    created = httpx.post(f"{stack.api_url}/v1/notes", json={"title": "v1"}, headers=headers)
    assert created.headers["ETag"] == '"1"'
    assert created.json()["version"] == 1
    url = f"{stack.api_url}/v1/notes/{created.json()['id']}"
    assert httpx.get(url, headers=headers).headers["ETag"] == '"1"'

    def patch(if_match: str | None, title: str) -> httpx.Response:
        extra = {} if if_match is None else {"If-Match": if_match}
        return httpx.patch(url, json={"title": title}, headers={**headers, **extra})

    required = _assert_problem(patch(None, "no condition"), 428)
    assert required["type"] == "urn:bulwark:problem:precondition-required"
    changed = patch('"1"', "v2")
    assert (changed.status_code, changed.headers["ETag"]) == (200, '"2"')
    assert changed.json()["version"] == 2
    # Another device still holds version 1: its change is refused, nothing is lost.
    stale = _assert_problem(patch('"1"', "lost update"), 412)
    assert stale["type"] == "urn:bulwark:problem:precondition-failed"
    assert _assert_problem(patch('W/"2"', "weak"), 412)  # weak tags never match If-Match
    assert _assert_problem(patch('"2x"', "not ours"), 412)
    _assert_problem(patch("2", "unquoted"), 400)
    assert patch('"9", "2"', "v3").headers["ETag"] == '"3"'  # any tag of the list
    assert patch("*", "v4").headers["ETag"] == '"4"'  # any current representation
    read = httpx.get(url, headers=headers)
    assert (read.json()["title"], read.headers["ETag"]) == ("v4", '"4"')
    listed = httpx.get(f"{stack.api_url}/v1/notes", headers=headers).json()["items"]
    assert [item["version"] for item in listed] == [4]


@pytest.mark.security(stride="T", asvs=("V2.3",))
def test_delete_honours_if_match(stack: RunningStack) -> None:
    _, headers = _user(stack)
    url = f"{stack.api_url}/v1/notes"
    first, second = (
        httpx.post(url, json={"title": t}, headers=headers).json()["id"] for t in ("a", "b")
    )
    stale = httpx.delete(f"{url}/{first}", headers={**headers, "If-Match": '"2"'})
    _assert_problem(stale, 412)
    assert httpx.get(f"{url}/{first}", headers=headers).status_code == 200
    current = httpx.delete(f"{url}/{first}", headers={**headers, "If-Match": '"1"'})
    assert current.status_code == 204
    # Gone: a condition on a note that is not there is a plain 404 (RFC 9110 §13.2.1).
    gone = httpx.delete(f"{url}/{first}", headers={**headers, "If-Match": "*"})
    _assert_problem(gone, 404)
    assert httpx.delete(f"{url}/{second}", headers=headers).status_code == 204  # optional


# --- what a PATCH may change -----------------------------------------------------------------


@pytest.mark.security(stride="TE", asvs=("V15.3",))
@pytest.mark.parametrize(
    "field", ["id", "owner", "ownerId", "createdAt", "updatedAt", "version", "isPinned"]
)
def test_patch_refuses_fields_a_user_may_not_change(stack: RunningStack, field: str) -> None:
    _, headers = _user(stack)
    created = httpx.post(f"{stack.api_url}/v1/notes", json={"title": "mine"}, headers=headers)
    url = f"{stack.api_url}/v1/notes/{created.json()['id']}"
    response = httpx.patch(
        url,
        json={"title": "changed", field: "x"},
        headers={**headers, "If-Match": created.headers["ETag"]},
    )
    problem = _assert_problem(response, 400)
    assert field in [error["field"] for error in problem["errors"]]
    assert httpx.get(url, headers=headers).json() == created.json()  # nothing written


@pytest.mark.security(stride="T", asvs=("V2.2",))
def test_an_empty_patch_is_400(stack: RunningStack) -> None:
    _, headers = _user(stack)
    created = httpx.post(f"{stack.api_url}/v1/notes", json={"title": "mine"}, headers=headers)
    url = f"{stack.api_url}/v1/notes/{created.json()['id']}"
    conditional = {**headers, "If-Match": created.headers["ETag"]}
    for body in ({}, {"title": None}, {"body": None}):
        _assert_problem(httpx.patch(url, json=body, headers=conditional), 400)
    assert httpx.get(url, headers=headers).json() == created.json()
