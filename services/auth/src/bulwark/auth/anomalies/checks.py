"""The login detector as the login route uses it: one call after a successful login.

`LoginAnomalies.observe` reads the country from the trusted ingress header and schedules the
check in the background (``bulwark.common.background``): the login's answer never waits for
it, and a failing check (database down, say) is logged and dropped, never raised.
"""

import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from bulwark.auth.anomalies import queries
from bulwark.auth.anomalies.rules import (
    NEW_COUNTRY_AFTER_INACTIVITY,
    new_country_after_inactivity,
    parse_country,
)
from bulwark.auth.settings import AuthSettings
from bulwark.common.anomaly_flags import record_flag
from bulwark.common.background import BackgroundChecks
from bulwark.common.db import Database
from bulwark.common.http import ingress_header
from bulwark.common.logging import get_logger

_log = get_logger(__name__)


class LoginAnomalies:
    """Flags a login from a new country after ``ANOMALY_INACTIVITY_DAYS`` without one."""

    def __init__(self, db: Database, settings: AuthSettings) -> None:
        """Check logins against ``db``'s ``last_logins``, with ``settings``' header name,
        trusted proxies and inactivity threshold."""
        self._db = db
        self._header = settings.geo_country_header.encode("latin-1")
        self._trusted = settings.trusted_proxies
        self._inactivity = timedelta(days=settings.anomaly_inactivity_days)
        self._checks = BackgroundChecks()

    def observe(self, *, user_id: uuid.UUID, scope: Mapping[str, Any], ip: str | None) -> None:
        """Schedule the check of a successful login (``scope`` is the request's ASGI
        scope); returns at once and never raises."""
        country = parse_country(ingress_header(scope, self._header, self._trusted))
        self._checks.spawn("login_country", self._check(user_id, country, ip))

    async def _check(self, user_id: uuid.UUID, country: str | None, ip: str | None) -> None:
        async with self._db.transaction() as conn:
            previous, now = await queries.swap_last_login(conn, user_id, country)
            evidence = new_country_after_inactivity(
                previous, country, now=now, inactivity=self._inactivity, client_ip=ip
            )
            if evidence is None:
                return
            flag_id = await record_flag(
                conn, user_id=user_id, kind=NEW_COUNTRY_AFTER_INACTIVITY, evidence=evidence
            )
        _log.info(
            "anomaly_flagged", kind=NEW_COUNTRY_AFTER_INACTIVITY, user_id=user_id, flag_id=flag_id
        )

    async def aclose(self) -> None:
        """Let running checks finish (2 s at most), then cancel them."""
        await self._checks.aclose()
