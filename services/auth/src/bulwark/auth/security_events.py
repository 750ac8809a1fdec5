"""The append-only security event log (logins, refresh reuse and retries, device mismatches,
logouts and revocations).

Rows are written in the request's transaction where the event is part of a change, so an
event is recorded exactly when its effect is. The table refuses UPDATE, DELETE and TRUNCATE.
"""

import uuid
from enum import StrEnum

import asyncpg


class SecurityEvent(StrEnum):
    """Event types stored in ``security_events.event_type``."""

    LOGIN_SUCCEEDED = "login_succeeded"
    LOGIN_FAILED = "login_failed"
    REFRESH_REUSE_DETECTED = "refresh_reuse_detected"
    REFRESH_RETRY_ACCEPTED = "refresh_retry_accepted"  # a repeat within the grace window
    REFRESH_DEVICE_MISMATCH = "refresh_device_mismatch"
    SESSION_DELETED = "session_deleted"
    LOGOUT = "logout"
    LOGOUT_ALL = "logout_all"
    TOKEN_REVOKED = "token_revoked"  # noqa: S105  # an event name, not a password


async def record(
    conn: asyncpg.Connection | asyncpg.Pool,
    event: SecurityEvent,
    *,
    user_id: uuid.UUID | None = None,
    family_id: uuid.UUID | None = None,
    ip: str | None = None,
    device_id: str | None = None,
) -> None:
    """Append one event; time is the database's ``now()``."""
    await conn.execute(
        "INSERT INTO security_events (event_type, user_id, family_id, ip, device_id)"
        " VALUES ($1, $2, $3, $4, $5)",
        event.value,
        user_id,
        family_id,
        ip,
        device_id,
    )
