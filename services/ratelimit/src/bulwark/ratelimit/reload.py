"""Hot reload of the rules file: poll its modification time, swap in valid new rules.

A changed file (new ``st_mtime_ns``, size or inode) is loaded and validated; valid rules are
handed to ``apply``, and a broken file is logged (``rules_reload_failed`` with the error, which
names the line) while the rules in force stay. The broken file is not retried until it
changes again.
"""

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from bulwark.common.logging import get_logger
from bulwark.ratelimit.rules import Rules, RulesError, load_rules

log = get_logger(__name__)

DEFAULT_INTERVAL_SECONDS = 1.0

_Stamp = tuple[int, int, int] | None


def _stamp(path: Path) -> _Stamp:
    # os.stat follows links: a Kubernetes ConfigMap update leaves the link ``rules.yaml ->
    # ..data/rules.yaml`` as it is and swaps ``..data`` to a new directory, so the file
    # behind it, not the link, is what changes (tests/test_reload_configmap.py).
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class RulesWatcher:
    """Polls ``path`` every ``interval_seconds`` and calls ``apply(rules)`` on a valid change."""

    def __init__(
        self,
        path: Path,
        apply: Callable[[Rules], None],
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
    ) -> None:
        """Watch ``path``; the file as it is now counts as already loaded."""
        self._path = path
        self._apply = apply
        self._interval = interval_seconds
        self._seen = _stamp(path)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start polling in the running event loop."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def check(self) -> bool:
        """Reload now if the file changed; True when new rules were put in force."""
        stamp = _stamp(self._path)
        if stamp == self._seen:
            return False
        self._seen = stamp
        try:
            rules = load_rules(self._path)
        except RulesError as exc:
            error = str(exc)
        else:
            self._apply(rules)
            log.info("rules_reloaded", path=str(self._path))
            return True
        log.error("rules_reload_failed", path=str(self._path), error=error)
        return False

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                self.check()
            except Exception:  # the poller must outlive any surprise
                log.exception("rules_reload_failed", path=str(self._path))
