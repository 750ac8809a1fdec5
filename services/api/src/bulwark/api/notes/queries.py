"""SQL for notes. Every query is parameterised and filtered by ``owner_id``, so another
user's note is simply not found (`note_owner`, for the anomaly detector, is the one
exception, and never answers a caller). ``version`` starts at 1 and every update raises it
(the note's ETag)."""

import uuid
from datetime import datetime

import asyncpg

from bulwark.common.db import Queryable

_COLUMNS = "SELECT id, title, body, created_at, updated_at, version"


async def insert_note(
    conn: Queryable, owner_id: uuid.UUID, title: str, body: str
) -> asyncpg.Record:
    """Create a note; return its row."""
    row: asyncpg.Record = await conn.fetchrow(
        "INSERT INTO notes (id, owner_id, title, body) VALUES ($1, $2, $3, $4)"
        " RETURNING id, title, body, created_at, updated_at, version",
        uuid.uuid4(),
        owner_id,
        title,
        body,
    )
    return row


async def get_note(
    conn: Queryable, owner_id: uuid.UUID, note_id: uuid.UUID
) -> asyncpg.Record | None:
    """The owner's note, or None (also when it belongs to someone else)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        _COLUMNS + " FROM notes WHERE id = $1 AND owner_id = $2",
        note_id,
        owner_id,
    )
    return row


async def list_notes(
    conn: Queryable,
    owner_id: uuid.UUID,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[asyncpg.Record]:
    """Up to ``limit`` of the owner's notes, newest first, strictly after ``after``."""
    after_time, after_id = after if after else (None, None)
    rows: list[asyncpg.Record] = await conn.fetch(
        _COLUMNS + " FROM notes"
        " WHERE owner_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))"
        " ORDER BY created_at DESC, id DESC LIMIT $4",
        owner_id,
        after_time,
        after_id,
        limit,
    )
    return rows


async def update_note(
    conn: Queryable,
    owner_id: uuid.UUID,
    note_id: uuid.UUID,
    title: str | None,
    body: str | None,
    *,
    versions: list[int] | None,
) -> asyncpg.Record | None:
    """Change the given fields of the owner's note and raise its version, provided its
    version is one of ``versions`` (None: any); return the new row, or None."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "UPDATE notes SET title = COALESCE($3, title), body = COALESCE($4, body),"
        " version = version + 1, updated_at = clock_timestamp()"
        " WHERE id = $1 AND owner_id = $2 AND ($5::integer[] IS NULL OR version = ANY($5))"
        " RETURNING id, title, body, created_at, updated_at, version",
        note_id,
        owner_id,
        title,
        body,
        versions,
    )
    return row


async def delete_note(
    conn: Queryable, owner_id: uuid.UUID, note_id: uuid.UUID, versions: list[int] | None
) -> bool:
    """Delete the owner's note, provided its version is one of ``versions`` (None: any);
    True when one was deleted."""
    status: str = await conn.execute(
        "DELETE FROM notes WHERE id = $1 AND owner_id = $2"
        " AND ($3::integer[] IS NULL OR version = ANY($3))",
        note_id,
        owner_id,
        versions,
    )
    return status == "DELETE 1"


async def note_owner(conn: Queryable, note_id: uuid.UUID) -> uuid.UUID | None:
    """Whoever owns note ``note_id``, or None when there is no such note. For the anomaly
    detector only (``bulwark.api.anomalies``): what a caller is told stays owner-filtered."""
    owner: uuid.UUID | None = await conn.fetchval(
        "SELECT owner_id FROM notes WHERE id = $1", note_id
    )
    return owner
