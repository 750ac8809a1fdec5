"""Notes are owner-only: another user's note is a 404 for every verb, never its content, and
each attempt at it is counted by the anomaly detector (docs/anomalies.md)."""

from __future__ import annotations

import time
import uuid
from datetime import datetime

import httpx
import pytest
import redis

from bulwark.api.notes.rules import Cursor, encode_cursor

from .conftest import RunningStack
from .helpers import bearer, login, register


def _foreign_attempts(stack: RunningStack, user_id: str) -> int:
    """The detector's count of ``user_id``'s attempts at other users' notes."""
    client = redis.Redis.from_url(stack.config.redis_url, socket_timeout=5)
    try:
        key = f"{stack.config.session_key_prefix}anomaly:foreign:{{{user_id}}}:count"
        count = client.get(key)
    finally:
        client.close()
    return int(count) if count else 0


@pytest.mark.security(stride="EI", asvs=("V8.2",))
def test_another_users_note_is_404_for_every_verb(stack: RunningStack) -> None:
    alice, mallory = register(stack.auth_url), register(stack.auth_url)
    alice_token = login(stack.auth_url, alice)["access_token"]
    mallory_token = login(stack.auth_url, mallory)["access_token"]
    note = httpx.post(
        f"{stack.api_url}/v1/notes",
        json={"title": "Bank PIN hint", "body": "secret-note-body"},
        headers=bearer(alice_token, alice),
    ).json()
    url = f"{stack.api_url}/v1/notes/{note['id']}"
    missing = f"{stack.api_url}/v1/notes/{uuid.uuid4()}"
    as_mallory = bearer(mallory_token, mallory)
    # Even with the note's real ETag, or "*": a 404 before any precondition, never a 412
    # that would tell the note exists.
    for if_match in ('"1"', "*"):
        conditional = {**as_mallory, "If-Match": if_match}
        for response in (
            httpx.get(url, headers=as_mallory),
            httpx.patch(url, json={"title": "pwned"}, headers=conditional),
            httpx.delete(url, headers=conditional),
        ):
            assert response.status_code == 404
            assert "secret-note-body" not in response.text
            assert "etag" not in response.headers
            assert (
                response.json()["detail"] == httpx.get(missing, headers=as_mallory).json()["detail"]
            )
    # Each read, update and delete of hers was counted (the missing id was not).
    deadline = time.monotonic() + 10
    while _foreign_attempts(stack, mallory.user_id) < 6:
        assert time.monotonic() < deadline, _foreign_attempts(stack, mallory.user_id)
        time.sleep(0.05)
    # Without If-Match a PATCH is refused before any lookup: the same 428 for any id.
    unconditional = [
        httpx.patch(target, json={"title": "pwned"}, headers=as_mallory)
        for target in (url, missing)
    ]
    assert [r.status_code for r in unconditional] == [428, 428]
    assert len({r.json()["detail"] for r in unconditional}) == 1
    # Her list, also from a cursor placed at Alice's note, holds none of Alice's notes.
    assert httpx.get(f"{stack.api_url}/v1/notes", headers=as_mallory).json()["items"] == []
    at_alices = encode_cursor(
        Cursor(created_at=datetime.fromisoformat(note["createdAt"]), id=uuid.UUID(note["id"]))
    )
    after = httpx.get(f"{stack.api_url}/v1/notes", params={"cursor": at_alices}, headers=as_mallory)
    assert (after.status_code, after.json()["items"]) == (200, [])
    still = httpx.get(url, headers=bearer(alice_token, alice))
    assert still.status_code == 200
    assert still.json()["title"] == "Bank PIN hint"
    assert still.json()["version"] == 1


@pytest.mark.security(stride="E", asvs=("V8.2",))
def test_note_lifecycle_and_cursor_pagination(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    headers = bearer(login(stack.auth_url, user)["access_token"], user)
    ids = [
        httpx.post(
            f"{stack.api_url}/v1/notes", json={"title": f"note {i}"}, headers=headers
        ).json()["id"]
        for i in range(5)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = httpx.get(f"{stack.api_url}/v1/notes", params=params, headers=headers).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    assert (
        httpx.get(f"{stack.api_url}/v1/notes", params={"limit": 101}, headers=headers).status_code
        == 400
    )
    assert (
        httpx.get(
            f"{stack.api_url}/v1/notes", params={"cursor": "not-a-cursor"}, headers=headers
        ).status_code
        == 400
    )

    updated = httpx.patch(
        f"{stack.api_url}/v1/notes/{ids[0]}",
        json={"body": "edited"},
        headers={**headers, "If-Match": '"1"'},
    )
    assert updated.status_code == 200
    assert updated.json()["body"] == "edited"
    assert httpx.delete(f"{stack.api_url}/v1/notes/{ids[0]}", headers=headers).status_code == 204
    assert httpx.get(f"{stack.api_url}/v1/notes/{ids[0]}", headers=headers).status_code == 404
