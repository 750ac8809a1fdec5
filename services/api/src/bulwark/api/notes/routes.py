"""HTTP routes for notes: create, list (cursor), read, update, delete; owner only.

Each route runs one statement, on a connection taken from a pool for that statement only
(``bulwark.common.db``), after ``caller`` has authenticated and rate-limited the request.
Writes run on the primary; the list and read run on the read replica when one is configured
and has replayed the caller's last write, else on the primary (``bulwark.api.replica``).

A note of another user answers 404 exactly like a note that does not exist; every such 404
is also reported to the anomaly detector (``note_not_found``), which runs in the background.
"""

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, Parameter
from msgspec import UNSET

from bulwark.api.anomalies.checks import note_not_found
from bulwark.api.notes import queries
from bulwark.api.notes.rules import (
    CURSOR_PATTERN,
    MAX_CURSOR_LENGTH,
    Cursor,
    check_text,
    decode_cursor,
    encode_cursor,
)
from bulwark.api.notes.schemas import Note, NoteCreate, NotePage, NoteUpdate
from bulwark.api.replica import NotesDatabases
from bulwark.common.access_tokens import AccessTokenClaims
from bulwark.common.db import Record
from bulwark.common.problems import NotFound

MAX_PAGE_SIZE = 100


def _note(row: Record) -> Note:
    return Note(
        id=str(row["id"]),
        title=row["title"],
        body=row["body"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class NoteController(Controller):
    """``/v1/notes`` (mounted under the ``/v1`` router)."""

    path = "/notes"

    @post(operation_id="createNote", status_code=201)
    async def create(
        self,
        data: JSONBody[NoteCreate],
        db: NamedDependency[NotesDatabases],
        caller: NamedDependency[AccessTokenClaims],
    ) -> Note:
        """Create a note owned by the caller."""
        title = check_text("title", data.title, multiline=False)
        body = check_text("body", data.body, multiline=True)
        owner = uuid.UUID(caller.sub)
        return _note(
            await db.write(caller.sub, lambda conn: queries.insert_note(conn, owner, title, body))
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

    @get("/{note_id:uuid}", operation_id="getNote")
    async def read(
        self,
        request: Request[Any, Any, Any],
        note_id: FromPath[uuid.UUID],
        db: NamedDependency[NotesDatabases],
        caller: NamedDependency[AccessTokenClaims],
    ) -> Note:
        """One of the caller's notes (404 for anyone else's)."""
        owner = uuid.UUID(caller.sub)
        row = await db.read(caller.sub, lambda conn: queries.get_note(conn, owner, note_id))
        if row is None:
            note_not_found(request, caller, note_id, "read")
            raise NotFound("No such note.")
        return _note(row)

    @patch("/{note_id:uuid}", operation_id="updateNote")
    async def update(
        self,
        request: Request[Any, Any, Any],
        note_id: FromPath[uuid.UUID],
        data: JSONBody[NoteUpdate],
        db: NamedDependency[NotesDatabases],
        caller: NamedDependency[AccessTokenClaims],
    ) -> Note:
        """Change the title and/or body of one of the caller's notes."""
        title = (
            check_text("title", data.title, multiline=False) if data.title is not UNSET else None
        )
        body = check_text("body", data.body, multiline=True) if data.body is not UNSET else None
        owner = uuid.UUID(caller.sub)
        row = await db.write(
            caller.sub, lambda conn: queries.update_note(conn, owner, note_id, title, body)
        )
        if row is None:
            note_not_found(request, caller, note_id, "update")
            raise NotFound("No such note.")
        return _note(row)

    @delete("/{note_id:uuid}", operation_id="deleteNote", status_code=204)
    async def remove(
        self,
        request: Request[Any, Any, Any],
        note_id: FromPath[uuid.UUID],
        db: NamedDependency[NotesDatabases],
        caller: NamedDependency[AccessTokenClaims],
    ) -> None:
        """Delete one of the caller's notes."""
        owner = uuid.UUID(caller.sub)
        if not await db.write(caller.sub, lambda conn: queries.delete_note(conn, owner, note_id)):
            note_not_found(request, caller, note_id, "delete")
            raise NotFound("No such note.")
