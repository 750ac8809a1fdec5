"""SQL for uploads. Every query is parameterised and filtered by ``owner_id``, so another
user's upload is simply not found (`upload_owner`, for the anomaly detector, is the one
exception, and never answers a caller)."""

import uuid

import asyncpg

from bulwark.common.db import Queryable


async def insert_upload(
    conn: Queryable,
    *,
    upload_id: uuid.UUID,
    owner_id: uuid.UUID,
    object_key: str,
    filename: str,
    content_type: str,
    size: int,
) -> asyncpg.Record:
    """Record a pending upload; return its row."""
    row: asyncpg.Record = await conn.fetchrow(
        "INSERT INTO uploads (id, owner_id, object_key, filename, content_type, size)"
        " VALUES ($1, $2, $3, $4, $5, $6)"
        " RETURNING id, owner_id, object_key, filename, content_type, size, state,"
        " created_at, completed_at",
        upload_id,
        owner_id,
        object_key,
        filename,
        content_type,
        size,
    )
    return row


async def get_upload(
    conn: Queryable, owner_id: uuid.UUID, upload_id: uuid.UUID
) -> asyncpg.Record | None:
    """The owner's upload, or None (also when it belongs to someone else)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT id, owner_id, object_key, filename, content_type, size, state, created_at,"
        " completed_at FROM uploads WHERE id = $1 AND owner_id = $2",
        upload_id,
        owner_id,
    )
    return row


async def lock_upload(
    conn: asyncpg.Connection, owner_id: uuid.UUID, upload_id: uuid.UUID
) -> asyncpg.Record | None:
    """The owner's upload, locked until ``conn``'s transaction ends (``FOR UPDATE``), or
    None: what `UploadService` holds while it writes or deletes the upload's objects, so a
    ``complete`` and a ``delete`` of one upload never interleave."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT id, owner_id, object_key, filename, content_type, size, state, created_at,"
        " completed_at FROM uploads WHERE id = $1 AND owner_id = $2 FOR UPDATE",
        upload_id,
        owner_id,
    )
    return row


async def mark_complete(
    conn: Queryable, owner_id: uuid.UUID, upload_id: uuid.UUID
) -> asyncpg.Record | None:
    """Mark the owner's upload complete (once: a complete one keeps its time); its row."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "UPDATE uploads SET state = 'complete',"
        " completed_at = COALESCE(completed_at, clock_timestamp())"
        " WHERE id = $1 AND owner_id = $2"
        " RETURNING id, owner_id, object_key, filename, content_type, size, state,"
        " created_at, completed_at",
        upload_id,
        owner_id,
    )
    return row


async def delete_upload(conn: Queryable, owner_id: uuid.UUID, upload_id: uuid.UUID) -> bool:
    """Delete the owner's upload record; True when one was deleted."""
    status: str = await conn.execute(
        "DELETE FROM uploads WHERE id = $1 AND owner_id = $2", upload_id, owner_id
    )
    return status == "DELETE 1"


async def upload_owner(conn: Queryable, upload_id: uuid.UUID) -> uuid.UUID | None:
    """Whoever owns upload ``upload_id``, or None when there is no such upload. For the
    anomaly detector only (``bulwark.api.anomalies``)."""
    owner: uuid.UUID | None = await conn.fetchval(
        "SELECT owner_id FROM uploads WHERE id = $1", upload_id
    )
    return owner


async def abandoned_uploads(
    conn: Queryable, older_than_seconds: float, limit: int
) -> list[asyncpg.Record]:
    """Up to ``limit`` uploads still pending ``older_than_seconds`` after they were
    declared, oldest first: ``id``, ``owner_id``, ``object_key``."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT id, owner_id, object_key FROM uploads WHERE state = 'pending'"
        " AND created_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT $2",
        older_than_seconds,
        limit,
    )
    return rows


async def delete_pending_upload(conn: Queryable, upload_id: uuid.UUID) -> bool:
    """Delete an upload only while it is still pending; True when one was deleted."""
    status: str = await conn.execute(
        "DELETE FROM uploads WHERE id = $1 AND state = 'pending'", upload_id
    )
    return status == "DELETE 1"
