"""Anomaly flags: accounts that behaved unusually, stored for an operator's review.

A flag never blocks anyone; it is a row to look at (docs/anomalies.md). Each service keeps
its own flags in its own database (the auth service its login flags, the API its request
flags), in an ``anomaly_flags`` table that both create with the same migration text:

    id bigserial, user_id uuid, kind text, detected_at timestamptz (the database's now()),
    evidence jsonb, status 'open' | 'reviewed', reviewed_at timestamptz, review_note text

Rows are kept as detected: the table refuses DELETE and TRUNCATE, and an UPDATE may only
mark an open flag reviewed. This module holds the SQL both services and their
``flags`` commands use.
"""

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import asyncpg
import msgspec

from bulwark.common.db import Queryable

FlagStatus = Literal["open", "reviewed"]
#: Most flags one listing returns.
MAX_LISTED = 1000
#: Longest review note kept, in characters.
MAX_REVIEW_NOTE = 500


class AnomalyFlag(msgspec.Struct, frozen=True, kw_only=True):
    """One stored flag. ``evidence`` is the detector's JSON object (docs/anomalies.md)."""

    id: int
    user_id: str
    kind: str
    detected_at: datetime
    status: FlagStatus
    evidence: dict[str, Any]
    reviewed_at: datetime | None = None
    review_note: str | None = None


async def record_flag(
    conn: Queryable,
    *,
    user_id: uuid.UUID,
    kind: str,
    evidence: Mapping[str, Any],
) -> int:
    """Store an open flag of ``kind`` (``[a-z_]{1,64}``) on ``user_id``; return its id.

    Raises:
        asyncpg.PostgresError: the insert failed (the kind is malformed, the table is gone).
    """
    flag_id: int = await conn.fetchval(
        "INSERT INTO anomaly_flags (user_id, kind, evidence) VALUES ($1, $2, $3::jsonb)"
        " RETURNING id",
        user_id,
        kind,
        msgspec.json.encode(evidence).decode(),
    )
    return flag_id


def _flag(row: asyncpg.Record) -> AnomalyFlag:
    return AnomalyFlag(
        id=row["id"],
        user_id=str(row["user_id"]),
        kind=row["kind"],
        detected_at=row["detected_at"],
        status=row["status"],
        evidence=msgspec.json.decode(row["evidence"]),
        reviewed_at=row["reviewed_at"],
        review_note=row["review_note"],
    )


async def list_flags(
    conn: Queryable,
    *,
    user_id: uuid.UUID | None = None,
    kind: str | None = None,
    status: FlagStatus | None = None,
    limit: int = 100,
) -> list[AnomalyFlag]:
    """Flags matching every filter given, newest first, at most ``limit`` (1 to
    `MAX_LISTED`)."""
    rows = await conn.fetch(
        "SELECT id, user_id, kind, detected_at, status, evidence::text AS evidence,"
        " reviewed_at, review_note FROM anomaly_flags"
        " WHERE ($1::uuid IS NULL OR user_id = $1) AND ($2::text IS NULL OR kind = $2)"
        " AND ($3::text IS NULL OR status = $3)"
        " ORDER BY detected_at DESC, id DESC LIMIT $4",
        user_id,
        kind,
        status,
        max(1, min(limit, MAX_LISTED)),
    )
    return [_flag(row) for row in rows]


async def review_flag(conn: Queryable, flag_id: int, note: str | None = None) -> bool:
    """Mark open flag ``flag_id`` reviewed, with an optional note (cut to
    `MAX_REVIEW_NOTE` characters); False when no open flag has that id."""
    row = await conn.fetchrow(
        "UPDATE anomaly_flags SET status = 'reviewed', reviewed_at = now(), review_note = $2"
        " WHERE id = $1 AND status = 'open' RETURNING id",
        flag_id,
        note[:MAX_REVIEW_NOTE] if note else None,
    )
    return row is not None
