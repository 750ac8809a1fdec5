"""The ``Allow`` header (RFC 9110 §10.2.1): every method a route has, on ``OPTIONS`` and on
405 answers.

Litestar 2 answers ``OPTIONS`` from the route object built for the FIRST handler of a path
(litestar-org/litestar#4169, fixed in Litestar 3): when a controller or router registers
``GET`` and then ``POST`` on one path, its ``Allow`` lists only the first. Its 405 has no
``Allow`` at all (litestar-org/litestar#4277). Both are answered here from the app's final
routes instead.
"""

from collections.abc import Callable, Coroutine
from typing import Any

from litestar import Litestar, Request, Response
from litestar.exceptions import HTTPException
from litestar.routes import HTTPRoute


def _allow(app: Litestar, template: str) -> str | None:
    """The ``Allow`` value of the route whose path template is ``template``, or None (a scan
    of a few dozen routes: cheaper than keeping a table in step with the app)."""
    for route in app.routes:
        if isinstance(route, HTTPRoute) and route.path_format == template:
            return ", ".join(sorted(route.methods))
    return None


def allowed_methods(request: Request[Any, Any, Any]) -> str | None:
    """The ``Allow`` value of the route ``request``'s path matches (``"GET, OPTIONS, POST"``),
    or None when no route matches. Works before routing too (a 405 has no matched route)."""
    template = request.scope.get("path_template")
    if template is None:
        try:
            *_, template = request.app.asgi_router.handle_routing(
                path=request.scope["path"], method="OPTIONS"
            )
        except HTTPException:
            return None
    return _allow(request.app, template)


async def answer_options(request: Request[Any, Any, Any]) -> Response[None] | None:
    """A ``before_request`` hook: ``OPTIONS`` is answered 204 with the route's full
    ``Allow``; any other method goes on (None)."""
    if request.method != "OPTIONS":
        return None
    allow = allowed_methods(request) or "OPTIONS"
    return Response(None, status_code=204, headers={"Allow": allow})


BeforeRequest = Callable[[Request[Any, Any, Any]], Coroutine[Any, Any, Any]]


def first_answer(*hooks: BeforeRequest) -> BeforeRequest:
    """One ``before_request`` hook running ``hooks`` in order until one answers."""

    async def hook(request: Request[Any, Any, Any]) -> Any:
        for each in hooks:
            if (answer := await each(request)) is not None:
                return answer
        return None

    return hook
