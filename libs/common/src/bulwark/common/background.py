"""Fire-and-forget work that must never slow or fail a request: a bounded set of tasks.

Anomaly detectors run here: a request schedules its check and answers at once. Each check
has a deadline; a check that fails (Redis down, a database error, a bug) is logged as
``background_check_failed`` and dropped; when ``limit`` checks are already running, a new
one is dropped (``background_check_dropped``) instead of queueing without bound. Tasks copy
the request's structlog context, so their log lines carry its ``request_id``.

`running` is the other kind: one loop a service runs for as long as it serves (a sweep, a
refresh), started and stopped with a lifespan.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from bulwark.common.logging import get_logger
from bulwark.common.redaction import redact_text

_log = get_logger(__name__)


@contextlib.asynccontextmanager
async def running(loop: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """Run ``loop`` in a task named ``name`` for the duration of the block; cancel it and
    wait for it to end when the block ends. ``loop`` handles its own failures."""
    task = asyncio.create_task(loop, name=name)
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class BackgroundChecks:
    """At most ``limit`` running coroutines, each cancelled after ``timeout_seconds``."""

    def __init__(self, *, limit: int = 256, timeout_seconds: float = 5.0) -> None:
        """Allow ``limit`` concurrent checks of at most ``timeout_seconds`` each."""
        self._limit = limit
        self._timeout = timeout_seconds
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def running(self) -> int:
        """How many checks are running now."""
        return len(self._tasks)

    def spawn(self, name: str, check: Coroutine[Any, Any, None]) -> bool:
        """Run ``check`` in the background; False (and ``check`` closed unrun) when the set
        is full or closed. Never raises for the check's own failures."""
        if self._closed or len(self._tasks) >= self._limit:
            check.close()
            _log.warning("background_check_dropped", check=name, running=len(self._tasks))
            return False
        task = asyncio.create_task(self._guarded(name, check), name=f"check:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _guarded(self, name: str, check: Coroutine[Any, Any, None]) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await check
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  # a detector must never fail anything else
            _log.warning(
                "background_check_failed",
                check=name,
                error_type=type(exc).__name__,
                error=redact_text(str(exc))[:200],  # redacted before it is cut
            )

    async def aclose(self, grace_seconds: float = 2.0) -> None:
        """Refuse new checks, let running ones finish for ``grace_seconds``, cancel the rest."""
        self._closed = True
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=grace_seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
