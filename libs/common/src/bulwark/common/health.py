"""``/healthz``, shared by the HTTP services (readiness: ``Database.ensure_ready``)."""

from litestar import get


@get("/healthz", operation_id="healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}
