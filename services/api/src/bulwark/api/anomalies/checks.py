"""The API's detectors as the request path uses them: calls that return at once.

`ApiAnomalies.observe_request` (every request with a valid token, from ``caller``) and
`not_found` (a 404 on one note or upload) schedule their checks in the background
(``observe_request`` counts the request in memory; the counts of `BURST_BATCH_SECONDS` go to
Redis together, one round trip for all the accounts seen, instead of one per request)
(``bulwark.common.background``): no answer waits for a detector, and a failing one (Redis or
Postgres down) is logged and dropped, never raised. A flag is a row in ``anomaly_flags``
plus an ``anomaly_flagged`` log line.
"""

import asyncio
import contextvars
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import redis.asyncio
import structlog
from litestar import Request

from bulwark.api.anomalies.bursts import BurstCounter
from bulwark.api.anomalies.probing import ProbeCounter
from bulwark.api.notes import queries as note_queries
from bulwark.api.settings import ApiSettings
from bulwark.api.uploads import queries as upload_queries
from bulwark.common import http
from bulwark.common.access_tokens import AccessTokenClaims
from bulwark.common.anomaly_flags import record_flag
from bulwark.common.background import BackgroundChecks
from bulwark.common.db import Database
from bulwark.common.logging import get_logger

#: Kinds of the API's flags.
REQUEST_BURST = "request_burst"
FOREIGN_NOTE_ATTEMPTS = "foreign_note_attempts"
FOREIGN_UPLOAD_ATTEMPTS = "foreign_upload_attempts"
#: Per owner-only resource: who owns one (None: there is no such one), and its flag's kind.
#: One counter per user takes the attempts at all of them; the attempt that reaches the
#: threshold names the flag.
_RESOURCES: dict[str, tuple[Callable[[Database, uuid.UUID], Awaitable[uuid.UUID | None]], str]] = {
    "note": (note_queries.note_owner, FOREIGN_NOTE_ATTEMPTS),
    "upload": (upload_queries.upload_owner, FOREIGN_UPLOAD_ATTEMPTS),
}

_log = get_logger(__name__)
#: Seconds an API process gathers requests before counting them in Redis: a burst is seen
#: this much later, at most; a process that stops loses at most this much of its count.
BURST_BATCH_SECONDS = 0.05


class ApiAnomalies:
    """The request-burst and foreign-note detectors of one API process."""

    def __init__(self, db: Database, settings: ApiSettings) -> None:
        """Flags go to ``db``'s ``anomaly_flags``; counters to ``settings.redis_url``."""
        self._db = db
        self._settings = settings
        timeout = settings.redis_timeout
        self._redis = redis.asyncio.Redis.from_pool(
            redis.asyncio.BlockingConnectionPool.from_url(
                settings.redis_url,
                max_connections=32,
                timeout=timeout,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
        )
        self._bursts = BurstCounter(
            self._redis,
            key_prefix=settings.redis_key_prefix,
            window_seconds=settings.anomaly_burst_window,
            floor=settings.anomaly_burst_floor,
            factor=settings.anomaly_burst_factor,
            alpha=settings.anomaly_burst_alpha,
            cooldown_seconds=settings.anomaly_burst_cooldown,
        )
        self._probes = ProbeCounter(
            self._redis,
            key_prefix=settings.redis_key_prefix,
            window_seconds=settings.anomaly_foreign_window,
            threshold=settings.anomaly_foreign_threshold,
        )
        self._checks = BackgroundChecks()
        #: Requests counted since the last batch went to Redis, and each user's last address.
        self._requests: dict[str, int] = {}
        self._addresses: dict[str, str | None] = {}
        self._request_ids: dict[str, str | None] = {}

    def observe_request(self, user_id: str, client_ip: str | None) -> None:
        """Count a request of ``user_id`` (the token's ``sub``); the batch goes to Redis in
        the background within `BURST_BATCH_SECONDS`, and each burst it starts is flagged by a
        check of its own, its line naming the account's last request of the batch."""
        if not self._requests:
            # A context of its own: the batch is no request's, so its lines carry none's ids.
            batch = contextvars.Context().run(
                self._checks.spawn, "request_burst", self._check_bursts()
            )
            if not batch:
                return  # the checks are full or closed: this request goes uncounted, as before
        self._requests[user_id] = self._requests.get(user_id, 0) + 1
        self._addresses[user_id] = client_ip
        self._request_ids[user_id] = structlog.contextvars.get_contextvars().get("request_id")

    def observe_missing(
        self, user_id: str, kind: str, resource_id: uuid.UUID, action: str, client_ip: str | None
    ) -> None:
        """Look up, in the background, whose ``kind`` (``note``, ``upload``) ``resource_id``
        was when ``user_id`` got a 404 for it (``action``: read, update, delete, complete),
        and count it when it was another's."""
        self._checks.spawn(
            f"foreign_{kind}", self._check_missing(user_id, kind, resource_id, action, client_ip)
        )

    async def _check_bursts(self) -> None:
        await asyncio.sleep(BURST_BATCH_SECONDS)
        requests, self._requests = self._requests, {}
        addresses, self._addresses = self._addresses, {}
        request_ids, self._request_ids = self._request_ids, {}
        bursts = await self._bursts.observe_many(requests)
        for user_id, burst in bursts.items():
            evidence = {
                "requests": burst.requests,
                "window_seconds": self._settings.anomaly_burst_window,
                "threshold": round(burst.threshold, 2),
                "baseline": round(burst.baseline, 2),
                "floor": self._settings.anomaly_burst_floor,
                "factor": self._settings.anomaly_burst_factor,
                "client_ip": addresses.get(user_id),
            }
            # Each flag written on its own (a failed or slow write loses only its own), its
            # line naming the account's last request of the batch.
            request_id = request_ids.get(user_id)
            with structlog.contextvars.bound_contextvars(
                **({"request_id": request_id} if request_id else {})
            ):
                self._checks.spawn("request_burst", self._flag(user_id, REQUEST_BURST, evidence))

    async def _check_missing(
        self, user_id: str, kind: str, resource_id: uuid.UUID, action: str, client_ip: str | None
    ) -> None:
        owner_of, flag_kind = _RESOURCES[kind]
        owner = await owner_of(self._db, resource_id)
        if owner is None or str(owner) == user_id:
            return
        target = {f"{kind}_id": str(resource_id), "owner_id": str(owner), "action": action}
        probing = await self._probes.observe(user_id, target)
        if probing is None:
            return
        await self._flag(
            user_id,
            flag_kind,
            {
                "attempts": probing.attempts,
                "window_seconds": self._settings.anomaly_foreign_window,
                "threshold": self._settings.anomaly_foreign_threshold,
                "targets": probing.targets,
                "client_ip": client_ip,
            },
        )

    async def _flag(self, user_id: str, kind: str, evidence: dict[str, Any]) -> None:
        flag_id = await record_flag(
            self._db, user_id=uuid.UUID(user_id), kind=kind, evidence=evidence
        )
        _log.info("anomaly_flagged", kind=kind, user_id=user_id, flag_id=flag_id)

    async def aclose(self) -> None:
        """Let running checks finish (2 s at most), then close the Redis connections."""
        await self._checks.aclose()
        await self._redis.aclose(close_connection_pool=True)


def not_found(
    request: Request[Any, Any, Any],
    caller: AccessTokenClaims,
    kind: str,
    resource_id: uuid.UUID,
    action: str,
) -> None:
    """Tell the detector that ``caller`` got a 404 for the ``kind`` (``note``, ``upload``)
    ``resource_id`` (``action``: read, update, delete, complete). Returns at once; the
    answer stays a plain 404 whatever it finds."""
    anomalies: ApiAnomalies = request.app.state.anomalies
    scope = cast("Mapping[str, Any]", request.scope)
    anomalies.observe_missing(caller.sub, kind, resource_id, action, http.client_ip(scope))


def note_not_found(
    request: Request[Any, Any, Any], caller: AccessTokenClaims, note_id: uuid.UUID, action: str
) -> None:
    """`not_found` for a note."""
    not_found(request, caller, "note", note_id, action)
