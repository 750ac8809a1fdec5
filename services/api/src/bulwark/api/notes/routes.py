"""HTTP routes for notes: create, list (cursor), read, update, delete; owner only.

Each route runs one statement, on a connection taken from a pool for that statement only
(``bulwark.common.db``), after ``caller`` has authenticated and rate-limited the request.
Writes run on the primary; the list and read run on the read replica when one is configured
and has replayed the caller's last write, else on the primary (``bulwark.api.replica``).

A note of another user answers 404 exactly like a note that does not exist; every such 404
is also reported to the anomaly detector (``note_not_found``), which runs in the background.

Safe writes (docs/safe-writes.md): a create honours ``Idempotency-Key``
(``bulwark.api.idempotency``); every note answer carries its strong ``ETag``; ``PATCH``
requires ``If-Match`` (428 without; 412 when stale) and ``DELETE`` honours it.
"""

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, Parameter

from bulwark.api import preconditions
from bulwark.api.anomalies.checks import note_not_found
from bulwark.api.idempotency import Created, IdempotencyKey, as_stored, create_once
from bulwark.api.notes import queries, rules
from bulwark.api.notes.rules import (
    CURSOR_PATTERN,
    MAX_CURSOR_LENGTH,
    Cursor,
    check_text,
    decode_cursor,
    encode_cursor,
    etag,
)
from bulwark.api.notes.schemas import Note, NoteCreate, NotePage, NoteUpdate
from bulwark.api.replica import NotesDatabases
from bulwark.common.access_tokens import AccessTokenClaims
from bulwark.common.db import Connection, Record
from bulwark.common.openapi.answers import IF_MATCH
from bulwark.common.problems import NotFound

MAX_PAGE_SIZE = 100
# Response headers, for the OpenAPI document (the handlers set them).
_ETAG = ResponseHeader(
    name="ETag",
    description="The note's strong entity tag (RFC 9110 §8.8.3).",
    documentation_only=True,
)
_LOCATION = ResponseHeader(
    name="Location", description="The new note's URL path.", documentation_only=True
)


def _note(row: Record) -> Note:
    return Note(
        id=str(row["id"]),
        title=row["title"],
        body=row["body"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )


def _answer(row: Record) -> Response[Note]:
    return Response(_note(row), headers={"ETag": etag(row["version"])})


async def _insert(conn: Connection, owner: uuid.UUID, title: str, body: str) -> Created[Note]:
    row = await queries.insert_note(conn, owner, title, body)
    headers = {"Location": f"/v1/notes/{row['id']}", "ETag": etag(row["version"])}
    return Created(_note(row), headers)


def _if_match(request: Request[Any, Any, Any]) -> list[str]:
    return request.headers.getall(preconditions.HEADER, [])


class NoteController(Controller):
    """``/v1/notes`` (mounted under the ``/v1`` router)."""

    path = "/notes"

    @post(
        operation_id="createNote",
        status_code=201,
        response_headers=[_ETAG, _LOCATION],
    )
    async def create(
        self,
        data: JSONBody[NoteCreate],
        db: NamedDependency[NotesDatabases],
        caller: NamedDependency[AccessTokenClaims],
        idempotency_key: NamedDependency[IdempotencyKey | None],
    ) -> Response[Note]:
        """Create a note owned by the caller (once per ``Idempotency-Key``)."""
        title = check_text("title", data.title, multiline=False)
        body = check_text("body", data.body, multiline=True)
        owner = uuid.UUID(caller.sub)
        return await db.write(
            caller.sub,
            lambda primary: create_once(
                primary,
                idempotency_key,
                data,
                Note,
                lambda c: _insert(c, owner, title, body),
                as_stored,
            ),
        )

    @get(operation_id="listNotes")
    async def list_notes(
        self,
        db: NamedDependency[NotesDatabases],
        caller: NamedDependency[AccessTokenClaims],
        cursor: Annotated[
            str | None,
            Parameter(max_length=MAX_CURSOR_LENGTH, schema_extra={"pattern": CURSOR_PATTERN}),
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE_SIZE)] = 20,
    ) -> NotePage:
        """The caller's notes, newest first, ``limit`` (1-100) per page."""
        after = decode_cursor(cursor) if cursor else None
        owner, position = uuid.UUID(caller.sub), (after.created_at, after.id) if after else None
        rows = await db.read(
            caller.sub, lambda conn: queries.list_notes(conn, owner, limit + 1, position)
        )
        items = [_note(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor(Cursor(created_at=last["created_at"], id=last["id"]))
        return NotePage(items=items, next_cursor=next_cursor)

    @get("/{note_id:uuid}", operation_id="getNote", response_headers=[_ETAG])
    async def read(
        self,
        request: Request[Any, Any, Any],
        note_id: FromPath[uuid.UUID],
        db: NamedDependency[NotesDatabases],
        caller: NamedDependency[AccessTokenClaims],
    ) -> Response[Note]:
        """One of the caller's notes (404 for anyone else's), with its ``ETag``."""
        owner = uuid.UUID(caller.sub)
        row = await db.read(caller.sub, lambda conn: queries.get_note(conn, owner, note_id))
        if row is None:
            note_not_found(request, caller, note_id, "read")
            raise NotFound("No such note.")
        return _answer(row)

    @patch(
        "/{note_id:uuid}",
        operation_id="updateNote",
        response_headers=[_ETAG],
        opt={"answers": (412, 428), "headers": {"If-Match": {**IF_MATCH, "required": True}}},
    )
    async def update(
        self,
        request: Request[Any, Any, Any],
        note_id: FromPath[uuid.UUID],
        data: JSONBody[NoteUpdate],
        db: NamedDependency[NotesDatabases],
        caller: NamedDependency[AccessTokenClaims],
    ) -> Response[Note]:
        """Change the title and/or body of one of the caller's notes, if ``If-Match`` (required)
        names its current ``ETag``."""
        if_match = preconditions.require_if_match(_if_match(request))
        title = (
            None
            if data.title is msgspec.UNSET
            else check_text("title", data.title, multiline=False)
        )
        body = None if data.body is msgspec.UNSET else check_text("body", data.body, multiline=True)
        owner = uuid.UUID(caller.sub)
        row = await db.write(
            caller.sub,
            lambda conn: rules.change_note(
                conn, owner, note_id, title=title, body=body, if_match=if_match
            ),
        )
        if row is None:
            note_not_found(request, caller, note_id, "update")
            raise NotFound("No such note.")
        return _answer(row)

    @delete(
        "/{note_id:uuid}",
        operation_id="deleteNote",
        status_code=204,
        opt={"answers": (412,), "headers": {"If-Match": IF_MATCH}},
    )
    async def remove(
        self,
        request: Request[Any, Any, Any],
        note_id: FromPath[uuid.UUID],
        db: NamedDependency[NotesDatabases],
        caller: NamedDependency[AccessTokenClaims],
    ) -> None:
        """Delete one of the caller's notes (if it matches ``If-Match``, when given)."""
        if_match = preconditions.parse_if_match(_if_match(request))
        owner = uuid.UUID(caller.sub)
        if not await db.write(
            caller.sub, lambda conn: rules.delete_note(conn, owner, note_id, if_match)
        ):
            note_not_found(request, caller, note_id, "delete")
            raise NotFound("No such note.")
