"""``OPTIONS`` answers with an ``Allow`` header listing every method of the route (RFC 9110
§9.3.7, §10.2.1).

Litestar 2 answers ``OPTIONS`` from the route object built for the FIRST handler of a path
(litestar-org/litestar#4169, fixed in Litestar 3): when a controller or router registers
``GET`` and then ``POST`` on one path, its ``Allow`` lists only the first. `answer_options`
answers from the app's final routes instead. (Litestar's 405 already lists them all.)
"""

from collections.abc import Callable, Coroutine
from typing import Any

from litestar import Request, Response
from litestar.routes import HTTPRoute

BeforeRequest = Callable[[Request[Any, Any, Any]], Coroutine[Any, Any, Any]]


def allowed_methods(request: Request[Any, Any, Any]) -> str:
    """The ``Allow`` value of the route ``request`` was routed to (``"GET, OPTIONS, POST"``):
    the methods of the app's route with the same path template, sorted."""
    template = request.scope.get("path_template")
    for route in request.app.routes:  # a few dozen: cheaper than a table kept in step
        if isinstance(route, HTTPRoute) and route.path_format == template:
            return ", ".join(sorted(route.methods))
    return "OPTIONS"


async def answer_options(request: Request[Any, Any, Any]) -> Response[None] | None:
    """A ``before_request`` hook: ``OPTIONS`` is answered 204 with the route's full
    ``Allow``; any other method goes on (None)."""
    if request.method != "OPTIONS":
        return None
    return Response(None, status_code=204, headers={"Allow": allowed_methods(request)})


def first_answer(*hooks: BeforeRequest) -> BeforeRequest:
    """One ``before_request`` hook running ``hooks`` in order until one answers (Litestar
    takes one per layer)."""

    async def hook(request: Request[Any, Any, Any]) -> Any:
        for each in hooks:
            if (answer := await each(request)) is not None:
                return answer
        return None

    return hook
