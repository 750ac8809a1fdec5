"""A process-local cache of keys known to be over their limit until their reset time.

While a key is cached, requests that would count on it are denied without a Redis round trip:
a flood on one key costs Redis one script run per reset period instead of one per request.
Safe because a denied request consumes nothing, so the answer cannot change before the reset
time except by an explicit reset (evicted here when it passes through this replica; another
replica's reset is seen here at the latest when the cached entry expires).
"""

import time

MAX_ENTRIES = 100_000


class OverLimitCache:
    """Maps a Redis key to the monotonic time (seconds) until which it is over its limit."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        """Hold at most ``max_entries`` keys (expired ones are swept when full)."""
        self._until: dict[str, float] = {}
        self._max = max_entries

    def remaining_ms(self, key: str, now: float | None = None) -> int:
        """Milliseconds ``key`` stays over its limit, or 0 when it is not cached (or expired)."""
        until = self._until.get(key)
        if until is None:
            return 0
        left = until - (time.monotonic() if now is None else now)
        if left <= 0:
            del self._until[key]
            return 0
        return max(1, int(left * 1000))

    def add(self, key: str, reset_ms: int, now: float | None = None) -> None:
        """Cache ``key`` as over its limit for ``reset_ms`` milliseconds."""
        now = time.monotonic() if now is None else now
        if len(self._until) >= self._max and key not in self._until:
            self._until = {k: v for k, v in self._until.items() if v > now}
            if len(self._until) >= self._max:
                return  # full of live entries: answer from Redis rather than grow
        self._until[key] = now + reset_ms / 1000

    def discard(self, key: str) -> None:
        """Forget ``key`` (after a reset action)."""
        self._until.pop(key, None)

    def clear(self) -> None:
        """Forget every key (after the rules changed)."""
        self._until.clear()

    def __len__(self) -> int:
        """Number of cached keys, expired ones included."""
        return len(self._until)
