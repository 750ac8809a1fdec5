"""Uploads on the local backend (docs/uploads.md): the whole flow through the real API, its
pre-signed URLs refused when expired, forged or used with other headers, and every body that
is not what was declared refused on ``complete`` with 422 and deleted."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from bulwark.api.replica import NotesDatabases
from bulwark.api.uploads.config import UploadConfig
from bulwark.api.uploads.local_storage import LocalStorage, ObjectGrant
from bulwark.api.uploads.service import UploadService
from bulwark.common.db import open_database

from . import upload_files
from .conftest import RunningStack, StackFactory
from .helpers import MobileUser, assert_problem, bearer, login, register

pytestmark = pytest.mark.security(stride="T", asvs=("V5.2",))


@dataclass
class Client:
    """A logged-in user of the API."""

    api: str
    user: MobileUser
    headers: dict[str, str]

    def create(self, filename: str, content_type: str, size: int) -> httpx.Response:
        body = {"filename": filename, "contentType": content_type, "size": size}
        return httpx.post(f"{self.api}/v1/uploads", json=body, headers=self.headers)

    def complete(self, upload_id: str) -> httpx.Response:
        # The first check of an API process starts its fork server (about 2 s).
        return httpx.post(
            f"{self.api}/v1/uploads/{upload_id}/complete", headers=self.headers, timeout=30
        )

    def get(self, upload_id: str) -> httpx.Response:
        return httpx.get(f"{self.api}/v1/uploads/{upload_id}", headers=self.headers)

    def delete(self, upload_id: str) -> httpx.Response:
        return httpx.delete(f"{self.api}/v1/uploads/{upload_id}", headers=self.headers)


@pytest.fixture
def uploads_stack(stack: RunningStack) -> RunningStack:
    """The session's stack: in test, its API keeps uploads in the stack's own folder, with a
    signing key it generated there on start."""
    return stack


def _client(stack: RunningStack) -> Client:
    user = register(stack.auth_url)
    return Client(stack.api_url, user, bearer(login(stack.auth_url, user)["access_token"], user))


def _object_file(stack: RunningStack, client: Client, upload_id: str) -> Path:
    return stack.config.uploads_dir / "uploads" / client.user.user_id / upload_id


def _checked_file(stack: RunningStack, client: Client, upload_id: str) -> Path:
    return stack.config.uploads_dir / "files" / client.user.user_id / upload_id


def _upload(client: Client, filename: str, content_type: str, data: bytes) -> str:
    """Create an upload and PUT ``data`` to its URL; its id."""
    created = client.create(filename, content_type, len(data))
    assert created.status_code == 201, created.text
    put = created.json()["uploadRequest"]
    assert httpx.put(put["url"], content=data, headers=put["headers"]).status_code == 200
    return str(created.json()["upload"]["id"])


@pytest.mark.security(stride="T", asvs=("V5.4", "V3.2"))
def test_upload_flow_and_download_headers(uploads_stack: RunningStack) -> None:
    alice, mallory = _client(uploads_stack), _client(uploads_stack)
    data = upload_files.png()
    created = alice.create("Fotó 1.png", "image/png", len(data))
    assert created.status_code == 201, created.text
    body = created.json()
    upload, put = body["upload"], body["uploadRequest"]
    assert upload["state"] == "pending"
    assert upload["download"] is None
    assert put["method"] == "PUT"
    assert put["headers"] == {"Content-Type": "image/png", "Content-Length": str(len(data))}
    assert "Fot" not in put["url"]  # the key is the server's, never the filename
    seconds_left = time.mktime(
        time.strptime(put["expiresAt"][:19], "%Y-%m-%dT%H:%M:%S")
    ) - time.mktime(time.gmtime())
    assert 0 < seconds_left <= 900

    # Before the bytes are there: 409, and the upload stays.
    assert_problem(alice.complete(upload["id"]), 409)
    assert httpx.put(put["url"], content=data, headers=put["headers"]).status_code == 200
    assert _object_file(uploads_stack, alice, upload["id"]).read_bytes() == data

    # Someone else's upload is not found, for every verb, and nothing changes.
    for response in (
        mallory.get(upload["id"]),
        mallory.complete(upload["id"]),
        mallory.delete(upload["id"]),
    ):
        assert_problem(response, 404)
        assert response.json()["detail"] == mallory.get(str(uuid.uuid4())).json()["detail"]
    assert alice.get(upload["id"]).json()["state"] == "pending"

    completed = alice.complete(upload["id"])
    assert completed.status_code == 200, completed.text
    assert completed.json()["state"] == "complete"
    assert alice.complete(upload["id"]).status_code == 200  # again: answered as it is
    # The PUT URL still works until it expires, but what it stores now is never served:
    # downloads are of the bytes that were checked.
    html = b"<html><script>alert(1)</script>".ljust(len(data))
    assert httpx.put(put["url"], content=html, headers=put["headers"]).status_code == 200

    read = alice.get(upload["id"])
    assert read.status_code == 200
    download = read.json()["download"]
    assert download["method"] == "GET"
    got = httpx.get(download["url"])
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["content-type"] == "image/png"
    assert got.headers["content-disposition"] == (
        "attachment; filename=\"Fot_ 1.png\"; filename*=UTF-8''Fot%C3%B3%201.png"
    )
    assert got.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in got.headers["content-security-policy"]
    # The download URL is for GET only.
    assert (
        httpx.put(download["url"], content=b"x", headers={"Content-Type": "image/png"}).status_code
        == 403
    )

    assert alice.delete(upload["id"]).status_code == 204
    assert not _object_file(uploads_stack, alice, upload["id"]).exists()
    assert not _checked_file(uploads_stack, alice, upload["id"]).exists()
    assert_problem(alice.get(upload["id"]), 404)
    assert httpx.get(download["url"]).status_code == 404


def test_declarations_are_checked(uploads_stack: RunningStack) -> None:
    client = _client(uploads_stack)
    for filename, content_type, size, field in [
        ("a.php.png", "image/png", 10, "filename"),
        ("a.png.html", "text/html", 10, "filename"),
        ("a.png ", "image/png", 10, "filename"),
        ("evil\u202egnp.pdf", "application/pdf", 10, "filename"),
        ("a.svg", "image/svg+xml", 10, "contentType"),
        ("a.jpg", "image/png", 10, "filename"),
        ("a.png", "image/png", 10 * 1024 * 1024 + 1, "size"),
    ]:
        refused = assert_problem(client.create(filename, content_type, size), 400)
        assert field in [error["field"] for error in refused["errors"]], (filename, refused)


@pytest.mark.security(stride="S", asvs=("V5.2",))
def test_put_url_is_bound_to_its_type_length_and_lifetime(uploads_stack: RunningStack) -> None:
    client = _client(uploads_stack)
    data = upload_files.png()
    created = client.create("photo.png", "image/png", len(data)).json()
    put, upload_id = created["uploadRequest"], created["upload"]["id"]
    url, headers = put["url"], put["headers"]
    for refused in (
        httpx.put(url, content=data, headers={**headers, "Content-Type": "text/html"}),
        httpx.put(url, content=data, headers={**headers, "Content-Type": "image/svg+xml"}),
        httpx.put(url, content=data[:-1], headers={"Content-Type": "image/png"}),
        httpx.put(url, content=data + b"<html>", headers={"Content-Type": "image/png"}),
        httpx.put(url + "x", content=data, headers=headers),  # tampered
    ):
        assert_problem(refused, 403)
    assert not _object_file(uploads_stack, client, upload_id).exists()

    # Our own key, the same key and grant, but expired a second ago.
    key = f"uploads/{client.user.user_id}/{upload_id}"
    signing_key = (uploads_stack.config.uploads_dir / "signing.key").read_bytes()
    storage = LocalStorage(Path("unused"), signing_key, uploads_stack.api_url)
    expired = ObjectGrant("PUT", key, int(time.time()) - 1, "image/png", len(data))
    base = url[: url.rindex("/") + 1]
    answer = httpx.put(base + storage.sign(expired), content=data, headers=headers)
    assert assert_problem(answer, 403)["detail"] == "The object URL has expired."
    forged = LocalStorage(Path("unused"), b"another-key" * 4, uploads_stack.api_url)
    live = ObjectGrant("PUT", key, int(time.time()) + 60, "image/png", len(data))
    assert_problem(httpx.put(base + forged.sign(live), content=data, headers=headers), 403)
    assert not _object_file(uploads_stack, client, upload_id).exists()
    # The genuine URL still works.
    assert httpx.put(url, content=data, headers=headers).status_code == 200
    assert urllib.parse.urlsplit(url).path.startswith("/v1/upload-objects/")


@pytest.mark.parametrize(
    ("filename", "content_type", "data"),
    [
        pytest.param("page.png", "image/png", upload_files.html_behind_png_header(), id="html"),
        pytest.param("vector.png", "image/png", upload_files.SVG, id="svg-as-png"),
        # 100 million pixels: over the default limit (50 million), under Pillow's own error.
        pytest.param("bomb.png", "image/png", upload_files.png_bomb(10_000, 10_000), id="bomb"),
        pytest.param("big-bomb.png", "image/png", upload_files.png_bomb(), id="huge-bomb"),
        pytest.param("photo.jpg", "image/jpeg", upload_files.png(), id="png-as-jpeg"),
        pytest.param("doc.pdf", "application/pdf", upload_files.png(), id="png-as-pdf"),
    ],
)
def test_bodies_that_are_not_what_was_declared_are_refused_and_deleted(
    uploads_stack: RunningStack, filename: str, content_type: str, data: bytes
) -> None:
    client = _client(uploads_stack)
    upload_id = _upload(client, filename, content_type, data)
    assert _object_file(uploads_stack, client, upload_id).exists()
    problem = assert_problem(client.complete(upload_id), 422)
    assert "deleted" in str(problem["detail"])
    if filename.endswith("bomb.png"):  # refused from its header, by our own limit
        assert "over the limit of 50000000" in str(problem["detail"])
    assert not _object_file(uploads_stack, client, upload_id).exists()
    assert_problem(client.get(upload_id), 404)


def test_an_object_larger_than_declared_is_refused(uploads_stack: RunningStack) -> None:
    # The PUT URL refuses another length; a backend that did not would leave a larger object,
    # written here behind the API's back.
    client = _client(uploads_stack)
    data = upload_files.png()
    upload_id = _upload(client, "photo.png", "image/png", data)
    _object_file(uploads_stack, client, upload_id).write_bytes(data + b"\0" * 4096)
    problem = assert_problem(client.complete(upload_id), 422)
    assert "size" in str(problem["detail"])
    assert not _object_file(uploads_stack, client, upload_id).exists()


def test_a_pdf_upload_completes(uploads_stack: RunningStack) -> None:
    client = _client(uploads_stack)
    upload_id = _upload(client, "report.pdf", "application/pdf", upload_files.pdf())
    completed = client.complete(upload_id)
    assert completed.status_code == 200, completed.text
    got = httpx.get(completed.json()["download"]["url"])
    assert got.headers["content-type"] == "application/pdf"
    assert got.headers["content-disposition"].startswith('attachment; filename="report.pdf"')


def _upload_flags(stack: RunningStack, user_id: str) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(stack.databases["api"])
        try:
            rows = await conn.fetch(
                "SELECT evidence::text AS evidence FROM anomaly_flags"
                " WHERE user_id = $1 AND kind = 'foreign_upload_attempts'",
                uuid.UUID(user_id),
            )
        finally:
            await conn.close()
        return [json.loads(row["evidence"]) for row in rows]

    return asyncio.run(run())


@pytest.mark.security(stride="ER", asvs=("V8.2", "V16.3"))
def test_attempts_at_other_users_uploads_are_flagged(uploads_stack: RunningStack) -> None:
    owner, prober = _client(uploads_stack), _client(uploads_stack)
    upload_id = _upload(owner, "photo.png", "image/png", upload_files.png())
    attempts = [prober.get, prober.complete, prober.delete, prober.get, prober.complete]
    for attempt in attempts:  # the default threshold: 5 attempts
        assert_problem(attempt(upload_id), 404)
    deadline = time.monotonic() + 10
    while not (flags := _upload_flags(uploads_stack, prober.user.user_id)):
        assert time.monotonic() < deadline, "no foreign_upload_attempts flag"
        time.sleep(0.05)
    targets = flags[0]["targets"]
    assert [(t["upload_id"], t["owner_id"]) for t in targets] == [
        (upload_id, owner.user.user_id)
    ] * len(attempts)
    assert [t["action"] for t in targets] == ["read", "complete", "delete", "read", "complete"]
    assert owner.get(upload_id).status_code == 200  # never a block, nothing changed


def test_a_file_over_a_mebibyte_goes_through_the_local_backend(uploads_stack: RunningStack) -> None:
    # The HTTP server reads at most 1 MiB of a body by default; the local backend raises it.
    client = _client(uploads_stack)
    data = upload_files.noise_png(800, 800)
    assert len(data) > 1024 * 1024
    upload_id = _upload(client, "large.png", "image/png", data)
    completed = client.complete(upload_id)
    assert completed.status_code == 200, completed.text
    assert httpx.get(completed.json()["download"]["url"]).content == data


def test_a_retried_create_gets_the_same_upload_with_a_new_url(uploads_stack: RunningStack) -> None:
    """``Idempotency-Key`` on ``POST /v1/uploads`` (docs/safe-writes.md): a retry gets the
    same upload, and a PUT URL signed anew (a URL is never kept); once the upload is complete,
    a replay is 409 and signs nothing that could replace the checked file."""
    client = _client(uploads_stack)
    data = upload_files.png()
    keyed = {**client.headers, "Idempotency-Key": f'"{uuid.uuid4()}"'}
    body = {"filename": "a.png", "contentType": "image/png", "size": len(data)}
    first = httpx.post(f"{client.api}/v1/uploads", json=body, headers=keyed)
    assert first.status_code == 201, first.text
    time.sleep(1.1)  # a URL signed a second later differs (its expiry is in seconds)
    retried = httpx.post(f"{client.api}/v1/uploads", json=body, headers=keyed)
    assert retried.status_code == 201, retried.text
    upload_id = first.json()["upload"]["id"]
    assert retried.json()["upload"]["id"] == upload_id
    put = retried.json()["uploadRequest"]
    assert put["url"] != first.json()["uploadRequest"]["url"]
    assert httpx.put(put["url"], content=data, headers=put["headers"]).status_code == 200
    assert client.complete(upload_id).status_code == 200
    other = {**body, "size": len(data) + 1}
    assert_problem(httpx.post(f"{client.api}/v1/uploads", json=other, headers=keyed), 422)
    done = httpx.post(f"{client.api}/v1/uploads", json=body, headers=keyed)
    assert "uploadRequest" not in assert_problem(done, 409)
    assert asyncio.run(_count_uploads(uploads_stack, client)) == 1


async def _count_uploads(stack: RunningStack, client: Client) -> int:
    conn = await asyncpg.connect(stack.databases["api"], timeout=10)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM uploads WHERE owner_id = $1", uuid.UUID(client.user.user_id)
        )
    finally:
        await conn.close()
    return count


def test_uploads_abandoned_for_a_day_are_deleted_with_their_objects(
    uploads_stack: RunningStack,
) -> None:
    """The API's sweep (`UploadService.delete_abandoned`, run every few minutes by each
    process) deletes uploads still pending a day after they were declared, object first;
    completed and recent ones stay. Run here in-process on the stack's database and folder."""
    client = _client(uploads_stack)
    abandoned = _upload(client, "a.png", "image/png", upload_files.png())
    completed = _upload(client, "b.png", "image/png", upload_files.png())
    assert client.complete(completed).status_code == 200
    recent = _upload(client, "c.png", "image/png", upload_files.png())
    asyncio.run(_backdate(uploads_stack, [abandoned, completed], days=2))

    async def sweep() -> int:
        db = await open_database(uploads_stack.databases["api"], max_size=2)
        config = UploadConfig(local_dir=uploads_stack.config.uploads_dir)
        storage = LocalStorage.open(config, uploads_stack.api_url)
        try:
            return await UploadService(
                NotesDatabases(db, None, None), storage, config
            ).delete_abandoned()
        finally:
            await db.close()

    assert asyncio.run(sweep()) == 1
    assert_problem(client.get(abandoned), 404)
    assert not _object_file(uploads_stack, client, abandoned).exists()
    assert client.get(completed).json()["state"] == "complete"
    assert _checked_file(uploads_stack, client, completed).exists()
    assert client.get(recent).json()["state"] == "pending"
    assert _object_file(uploads_stack, client, recent).exists()


async def _backdate(stack: RunningStack, upload_ids: list[str], days: int) -> None:
    conn = await asyncpg.connect(stack.databases["api"], timeout=10)
    try:
        await conn.execute(
            "UPDATE uploads SET created_at = created_at - make_interval(days => $2),"
            " completed_at = completed_at - make_interval(days => $2) WHERE id = ANY($1)",
            [uuid.UUID(upload_id) for upload_id in upload_ids],
            days,
        )
    finally:
        await conn.close()


def test_a_delete_racing_completes_leaves_no_file_behind(uploads_stack: RunningStack) -> None:
    """``complete`` and ``delete`` of one upload take its row's lock around their object
    writes and deletions: whichever order they run in, a deleted upload leaves no checked
    file, and no download URL handed out by a racing ``complete`` works after the 204."""
    client = _client(uploads_stack)

    async def race(upload_id: str) -> list[httpx.Response]:
        url = f"{client.api}/v1/uploads/{upload_id}"
        async with httpx.AsyncClient(headers=client.headers, timeout=30) as http:
            completes = [http.post(f"{url}/complete") for _ in range(3)]
            return list(await asyncio.gather(*completes, http.delete(url)))

    for _ in range(20):  # the race without the lock left a file in about one try in three
        upload_id = _upload(client, "a.png", "image/png", upload_files.png())
        *completes, deleted = asyncio.run(race(upload_id))
        assert deleted.status_code == 204, deleted.text
        # 409: the delete had removed the bytes, not yet the record.
        assert {answer.status_code for answer in completes} <= {200, 404, 409}
        assert not _checked_file(uploads_stack, client, upload_id).exists()
        for answer in completes:
            if answer.status_code == 200:
                assert httpx.get(answer.json()["download"]["url"]).status_code == 404


#: The check deadline of `slow_check_stack`'s API, seconds.
CHECK_SECONDS = 2.0


#: How long `slow_check_stack`'s requests wait for a turn (an upload check slot too), seconds.
QUEUE_SECONDS = 0.5


@pytest.fixture(scope="module")
def slow_check_stack(stack_factory: StackFactory) -> RunningStack:
    """A stack whose API kills a content check after `CHECK_SECONDS` and lets a request
    wait `QUEUE_SECONDS` for its turn."""
    env = {
        "UPLOADS_CHECK_SECONDS": str(CHECK_SECONDS),
        "HTTP_QUEUE_TIMEOUT_SECONDS": str(QUEUE_SECONDS),
    }
    return stack_factory(env={"api": env})


@pytest.mark.security(stride="D", asvs=("V15.2",))
def test_a_slow_check_is_killed_at_its_deadline_and_others_go_on(
    slow_check_stack: RunningStack,
) -> None:
    alice, bob = _client(slow_check_stack), _client(slow_check_stack)
    # The API's first check starts its fork server (seconds: it imports the app once).
    first = _upload(bob, "first.png", "image/png", upload_files.png())
    assert bob.complete(first).status_code == 200
    slow = _upload(alice, "scans.jpg", "image/jpeg", upload_files.slow_jpeg())  # ~5 s to decode
    small = _upload(bob, "photo.png", "image/png", upload_files.png())
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        slow_done = pool.submit(alice.complete, slow)
        time.sleep(0.3)  # the slow check has started (its answer takes seconds)
        assert not slow_done.done()
        quick_started = time.monotonic()
        completed = bob.complete(small)
        assert completed.status_code == 200, completed.text
        assert time.monotonic() - quick_started < 1.5
        assert not slow_done.done()
        refused = slow_done.result(timeout=CHECK_SECONDS + 5)
    assert time.monotonic() - started < CHECK_SECONDS + 1.5
    problem = assert_problem(refused, 422)
    assert f"longer than {CHECK_SECONDS:g} seconds" in str(problem["detail"])
    assert not _object_file(slow_check_stack, alice, slow).exists()
    assert_problem(alice.get(slow), 404)


@pytest.mark.security(stride="D", asvs=("V15.2",))
def test_a_complete_that_finds_every_check_busy_is_503_and_stays_pending(
    slow_check_stack: RunningStack,
) -> None:
    """One user's slow files hold both check slots: another user's ``complete`` waits the
    queue timeout (HTTP_QUEUE_TIMEOUT_SECONDS), not for them, and can retry later."""
    alice, bob = _client(slow_check_stack), _client(slow_check_stack)
    first = _upload(bob, "first.png", "image/png", upload_files.png())  # the fork server runs
    assert bob.complete(first).status_code == 200
    slow = [_upload(alice, f"scans{i}.jpg", "image/jpeg", upload_files.slow_jpeg()) for i in (1, 2)]
    small = _upload(bob, "photo.png", "image/png", upload_files.png())
    with ThreadPoolExecutor(max_workers=2) as pool:
        slow_done = [pool.submit(alice.complete, upload) for upload in slow]
        time.sleep(0.6)  # both slow checks hold their slots (each takes seconds)
        started = time.monotonic()
        busy = bob.complete(small)
        waited = time.monotonic() - started
        assert not any(done.done() for done in slow_done)
        problem = assert_problem(busy, 503)
        assert waited < CHECK_SECONDS - 0.6, waited
        assert int(busy.headers["retry-after"]) >= 1
        assert "busy" in str(problem["detail"])
        for done in slow_done:
            assert done.result(timeout=10).status_code == 422
    assert bob.get(small).json()["state"] == "pending"
    assert bob.complete(small).status_code == 200
