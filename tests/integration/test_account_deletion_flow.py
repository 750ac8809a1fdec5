"""Deleting an account end to end (docs/account.md, docs/account-deletion.md): the user asks
the auth service, every session ends at once, auth erases its data, the deletion travels
through the outbox and the Redis stream to the API, which deletes the notes, uploads and
objects. Afterwards no row of either database holds the user's address, IP or device id,
and no row of the API's holds the user's id."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx
import pytest

from bulwark.auth.account.queries import purge_tombstones

from .conftest import RunningStack, StackFactory
from .helpers import MobileUser, assert_problem, bearer, login, refresh, register
from .test_account_deletion_crash import counts, files_of, make_data, wait_for

DEVICE_IP = "198.51.100.77"

pytestmark = pytest.mark.security(stride="ITE", asvs=("V14.2", "V7.4"))


@pytest.fixture(scope="module")
def deletions(stack_factory: StackFactory) -> RunningStack:
    # The test client's address is what the services record: one they can be asked about.
    return stack_factory(env={"auth": {"TRUSTED_PROXIES": "127.0.0.1/32"}})


async def _rows_holding(url: str, needles: list[str]) -> list[str]:
    """``table.column`` of every text-like column of ``url``'s database with a value that
    contains one of ``needles`` (case-insensitive)."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        columns = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND data_type IN ('text', 'jsonb', 'uuid',"
            " 'character varying', 'inet')"
        )
        found = []
        for column in columns:
            table, name = column["table_name"], column["column_name"]
            for needle in needles:
                hits = await conn.fetchval(
                    f'SELECT count(*) FROM "{table}" WHERE "{name}"::text ILIKE $1',  # noqa: S608  # names from the catalogue
                    f"%{needle}%",
                )
                if hits:
                    found.append(f"{table}.{name} holds {needle}")
        return found
    finally:
        await conn.close()


def _login_from(stack: RunningStack, user: MobileUser) -> dict[str, object]:
    """Log ``user`` in from `DEVICE_IP`, so the sessions and events record that address."""
    response = httpx.post(
        f"{stack.auth_url}/v1/auth/login",
        json={"email": user.email, "password": user.password, "device": "Alice's phone"},
        headers={**user.headers, "X-Forwarded-For": DEVICE_IP},
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def _headers(user: MobileUser, token: object) -> dict[str, str]:
    return {**bearer(token, user), "X-Forwarded-For": DEVICE_IP}


def test_deleting_an_account_ends_its_sessions_and_erases_it_in_both_services(
    deletions: RunningStack,
) -> None:
    alice, bob = register(deletions.auth_url), register(deletions.auth_url)
    make_data(deletions, alice, uploads=2)
    make_data(deletions, bob, uploads=1)
    phone, tablet = _login_from(deletions, alice), _login_from(deletions, alice)
    before_bob = counts(deletions, bob)

    wrong = httpx.post(
        f"{deletions.auth_url}/v1/auth/account-deletion",
        json={"password": "Not-Her-Password-1!"},
        headers=_headers(alice, phone["access_token"]),
    )
    assert_problem(wrong, 400)
    assert (
        httpx.get(f"{deletions.api_url}/v1/me", headers=bearer(phone["access_token"])).status_code
        == 200
    )

    deleted = httpx.post(
        f"{deletions.auth_url}/v1/auth/account-deletion",
        json={"password": alice.password},
        headers=_headers(alice, phone["access_token"]),
    )
    assert deleted.status_code == 202, deleted.text
    # Every session ends at once: the API refuses both devices' access tokens within 1 s.
    for tokens in (phone, tablet):
        wait_for(
            lambda t=tokens: (
                httpx.get(
                    f"{deletions.api_url}/v1/me", headers=bearer(t["access_token"])
                ).status_code
                == 401
            ),
            1.0,
            "the API refuses the deleted account's access token",
        )

    # The API deletes the notes, uploads and objects; Bob's stay.
    wait_for(
        lambda: not any(counts(deletions, alice).values()) and not files_of(deletions, alice),
        30,
        "the API deleted Alice's rows and objects",
    )
    assert counts(deletions, bob) == before_bob
    assert files_of(deletions, bob)
    assert deletions.mail.wait_for(alice.email, subject_contains="account was deleted")

    leftovers = asyncio.run(
        _rows_holding(deletions.databases["auth"], [alice.email, DEVICE_IP, alice.device_id])
    ) + asyncio.run(_rows_holding(deletions.databases["api"], [alice.user_id, alice.email]))
    assert leftovers == []

    # Later requests with the old credentials fail (and are recorded as new events).
    for tokens in (phone, tablet):
        assert refresh(deletions.auth_url, str(tokens["refresh_token"]), alice).status_code == 400
    relogin = httpx.post(
        f"{deletions.auth_url}/v1/auth/login",
        json={"email": alice.email, "password": alice.password},
        headers=alice.headers,
    )
    assert relogin.status_code == 401

    # The address is free again: a new account, with a new id.
    again = register(deletions.auth_url, alice.email)
    assert again.user_id != alice.user_id


def test_a_deleted_accounts_tombstone_goes_once_its_tokens_have_expired(
    deletions: RunningStack,
) -> None:
    user = register(deletions.auth_url)
    token = login(deletions.auth_url, user)["access_token"]
    response = httpx.post(
        f"{deletions.auth_url}/v1/auth/account-deletion",
        json={"password": user.password},
        headers=bearer(token, user),
    )
    assert response.status_code == 202

    async def tombstone() -> asyncpg.Record | None:
        conn = await asyncpg.connect(deletions.databases["auth"], timeout=10)
        try:
            row = await conn.fetchrow(
                "SELECT email, display_name, password_hash, deleted_at FROM users WHERE id = $1",
                uuid.UUID(user.user_id),
            )
            # What the sweep does once the access tokens' lifetime has passed.
            await conn.execute(
                "UPDATE users SET deleted_at = now() - interval '2 hours' WHERE id = $1",
                uuid.UUID(user.user_id),
            )
            assert await purge_tombstones(conn, 3600, 100) >= 1
            gone = await conn.fetchval(
                "SELECT count(*) FROM refresh_families WHERE user_id = $1", uuid.UUID(user.user_id)
            )
            assert gone == 0
            return row
        finally:
            await conn.close()

    row = asyncio.run(tombstone())
    assert row is not None
    assert row["deleted_at"] is not None
    assert user.email not in row["email"]
    assert row["display_name"] == "deleted"
    assert row["password_hash"] == "!"  # never verifies
