"""One log line per outage of a dependency, not one per failed request.

A database or Redis that stops answering fails every request until it is back; a warning
per request would bury the one line an operator needs. `OutageLog` writes a warning at the
first failure, counts the ones after it quietly, and writes one info line with that count
and the outage's length at the first success.
"""

import time
from collections.abc import Callable, Mapping

from bulwark.common.logging import get_logger

_log = get_logger(__name__)


class OutageLog:
    """The outage state of one dependency in this process; call `failed` on each failure
    and `succeeded` on each success (cheap: one attribute check while all is well).

    Args:
        down_event: the warning's event name (``database_unavailable``).
        up_event: the info line's event name (``database_recovered``).
        fields: added to both lines (``{"pool": "request"}``).
        clock: seconds, monotonic (injectable for tests).
    """

    def __init__(
        self,
        down_event: str,
        up_event: str,
        fields: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._down_event, self._up_event = down_event, up_event
        self._fields = dict(fields or {})
        self._clock = clock
        self._since: float | None = None
        self._failures = 0

    @property
    def failing(self) -> bool:
        """True between a failure and the next success."""
        return self._since is not None

    def failed(self, reason: str) -> None:
        """Record a failure; the first one of an outage is logged (warning, with ``reason``,
        a short fixed text such as an exception's class name, never a message or a URL)."""
        self._failures += 1
        if self._since is None:
            self._since = self._clock()
            _log.warning(self._down_event, reason=reason, **self._fields)

    def succeeded(self) -> None:
        """Record a success; one that ends an outage is logged (info) with the number of
        failures and the outage's length in seconds."""
        if self._since is None:
            return
        _log.info(
            self._up_event,
            failures=self._failures,
            seconds=round(self._clock() - self._since, 3),
            **self._fields,
        )
        self._since, self._failures = None, 0
