"""Health endpoints shared by the HTTP services: ``/healthz`` (alive) and the database part
of ``/readyz`` (ready)."""

import asyncpg
from litestar import get

from bulwark.common.problems import ServiceUnavailable


@get("/healthz", operation_id="healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


async def ensure_database_ready(pool: asyncpg.Pool) -> None:
    """Raise unless the database answers ``SELECT 1``.

    Raises:
        ServiceUnavailable: any failure (503; the body names nothing internal).
    """
    try:
        await pool.fetchval("SELECT 1")
    except Exception:  # noqa: BLE001  # any failure means not ready
        raise ServiceUnavailable("The database is not reachable.") from None
