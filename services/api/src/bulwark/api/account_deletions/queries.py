"""SQL of account deletion: every row the API keeps of one user, deleted in the caller's
transaction. A table keyed by a user that a later migration adds belongs here too."""

import uuid

import asyncpg

#: What the erasing transaction may take per statement, in seconds: a user with many rows
#: needs longer than a request's statement timeout (``DATABASE_TIMEOUT_SECONDS``), and an
#: erasure that always timed out would never be done.
ERASE_STATEMENT_SECONDS = 60

# (name in counts and logs, statement); the table and column names are fixed text.
_DELETES = (
    ("uploads", "DELETE FROM uploads WHERE owner_id = $1"),
    ("notes", "DELETE FROM notes WHERE owner_id = $1"),
    ("idempotency_keys", "DELETE FROM idempotency_keys WHERE owner_id = $1"),
    ("anomaly_flags", "DELETE FROM anomaly_flags WHERE user_id = $1"),
)


async def delete_user_rows(conn: asyncpg.Connection, user_id: uuid.UUID) -> dict[str, int]:
    """Delete every row of ``user_id`` (uploads, notes, idempotency keys, anomaly flags) on
    ``conn``, which must be in a transaction; return how many of each went (``{"notes": 3,
    ...}``; all 0 when the user has none, as on a second run).

    The transaction is the one ``anomaly_flags`` lets delete this user's flags (``SET LOCAL
    bulwark.erase_user``, migration 006), and its statements may take
    `ERASE_STATEMENT_SECONDS` each.

    Raises:
        asyncpg.PostgresError: a statement failed or timed out (the caller rolls back).
    """
    await conn.execute(
        "SELECT set_config('bulwark.erase_user', $1, true),"
        " set_config('statement_timeout', $2, true)",
        str(user_id),
        f"{ERASE_STATEMENT_SECONDS}s",
    )
    counts: dict[str, int] = {}
    for name, statement in _DELETES:
        status: str = await conn.execute(statement, user_id)
        counts[name] = int(status.rsplit(" ", 1)[-1])  # "DELETE 3"
    return counts
