"""The peer of ``bench.http``: a bare Litestar app answering ``GET /healthz`` with a small
JSON body, as Bulwark's own ``/healthz`` does, with no middleware at all."""

from litestar import Litestar, get


@get("/healthz")
async def healthz() -> dict[str, str]:
    """The same body as Bulwark's ``/healthz``."""
    return {"status": "ok"}


app = Litestar([healthz])
