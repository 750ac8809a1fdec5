"""SQL of the login detector: each user's last successful login (table ``last_logins``)."""

import uuid
from datetime import datetime

import asyncpg

from bulwark.auth.anomalies.rules import LastLogin


async def swap_last_login(
    conn: asyncpg.Connection, user_id: uuid.UUID, country: str | None
) -> tuple[LastLogin | None, datetime]:
    """Record a successful login of ``user_id`` now, from ``country`` (None keeps the
    country known so far); return the login it replaces (None for the user's first) and
    the database's ``now()``. The user's row is locked until the transaction ends, so two
    logins at once see one another in turn."""
    row = await conn.fetchrow(
        "UPDATE last_logins AS l SET logged_in_at = now(), country = COALESCE($2, l.country)"
        " FROM (SELECT user_id, logged_in_at, country FROM last_logins"
        "       WHERE user_id = $1 FOR UPDATE) AS old"
        " WHERE l.user_id = old.user_id"
        " RETURNING old.logged_in_at, old.country, now() AS now",
        user_id,
        country,
    )
    if row is not None:
        return LastLogin(row["logged_in_at"], row["country"]), row["now"]
    now: datetime = await conn.fetchval(
        "INSERT INTO last_logins AS l (user_id, logged_in_at, country) VALUES ($1, now(), $2)"
        " ON CONFLICT (user_id) DO UPDATE SET logged_in_at = now(),"
        " country = COALESCE(EXCLUDED.country, l.country)"
        " RETURNING now()",
        user_id,
        country,
    )
    return None, now
