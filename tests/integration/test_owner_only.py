"""Notes are owner-only: another user's note is a 404 for every verb, never its content."""

from __future__ import annotations

import uuid

import httpx

from .conftest import RunningStack
from .helpers import bearer, login, register


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
    for response in (
        httpx.get(url, headers=as_mallory),
        httpx.patch(url, json={"title": "pwned"}, headers=as_mallory),
        httpx.delete(url, headers=as_mallory),
    ):
        assert response.status_code == 404
        assert "secret-note-body" not in response.text
        assert response.json()["detail"] == httpx.get(missing, headers=as_mallory).json()["detail"]
    assert httpx.get(f"{stack.api_url}/v1/notes", headers=as_mallory).json()["items"] == []
    still = httpx.get(url, headers=bearer(alice_token, alice))
    assert still.status_code == 200
    assert still.json()["title"] == "Bank PIN hint"


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
        f"{stack.api_url}/v1/notes/{ids[0]}", json={"body": "edited"}, headers=headers
    )
    assert updated.status_code == 200
    assert updated.json()["body"] == "edited"
    assert httpx.delete(f"{stack.api_url}/v1/notes/{ids[0]}", headers=headers).status_code == 204
    assert httpx.get(f"{stack.api_url}/v1/notes/{ids[0]}", headers=headers).status_code == 404
