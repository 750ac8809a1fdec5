"""The rate limits of the account flows, counted through the rate limiter before any work
(``password_reset``, ``account_code``, ``account_mail``, ``reauthentication``; rules.yaml).
Shared by the JSON routes (`account.routes`) and the pages behind the mails' links
(`bulwark.auth.pages.account`)."""

from typing import Any

from litestar import Request
from litestar.datastructures import State

from bulwark.auth.deps import client_context
from bulwark.common import rate_limits


async def limit(request: Request[Any, Any, State], endpoint: str, **keys: str) -> None:
    """Count one hit per ``keys`` entry (plus the IP) against ``endpoint``'s limits.

    Raises:
        TooManyRequests: over a limit (429, ``Retry-After``).
        ServiceUnavailable: the rate limiter cannot answer and ``endpoint`` fails closed (503).
    """
    state = request.app.state
    ip = client_context(request).ip or "unknown"
    descriptors = [[("endpoint", endpoint), ("remote_address", ip)]]
    descriptors += [[("endpoint", endpoint), (key, value)] for key, value in keys.items()]
    await rate_limits.enforce(
        state.ratelimit,
        descriptors,
        fail_open=state.settings.fails_open(endpoint),
        request_state=request.scope["state"],
    )
