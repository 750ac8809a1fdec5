"""Rules of the login detector: the country a login came from, and when a login is flagged.

The country is the two-letter code an ingress (CloudFront's ``CloudFront-Viewer-Country``,
or any header named by ``GEO_COUNTRY_HEADER``) puts on the request; only the ingress is
believed (see ``bulwark.common.http.ingress_header``).
"""

import re
from datetime import datetime, timedelta
from typing import Any

import msgspec

#: The ``kind`` of this detector's flags.
NEW_COUNTRY_AFTER_INACTIVITY = "new_country_after_inactivity"
_ALPHA_2 = re.compile(r"^[A-Za-z]{2}\Z")
# Not a place: Cloudflare's and others' "unknown" (XX) and ISO's "unknown territory" (ZZ).
_UNKNOWN = frozenset({"XX", "ZZ"})


def parse_country(value: str | None) -> str | None:
    """``value`` as an ISO 3166-1 alpha-2 code in upper case (``" de"`` gives ``"DE"``), or
    None when absent, not two ASCII letters, or an "unknown" code (XX, ZZ)."""
    if value is None:
        return None
    code = value.strip()
    if not _ALPHA_2.match(code) or code.upper() in _UNKNOWN:
        return None
    return code.upper()


class LastLogin(msgspec.Struct, frozen=True):
    """A user's previous successful login: when, and the newest country known for them."""

    logged_in_at: datetime
    country: str | None


def new_country_after_inactivity(
    previous: LastLogin | None,
    country: str | None,
    *,
    now: datetime,
    inactivity: timedelta,
    client_ip: str | None,
) -> dict[str, Any] | None:
    """The evidence of a flag when this login (from ``country``, at ``now``) comes from
    another country than the user's last known one after at least ``inactivity`` without a
    login; None otherwise.

    No flag for a first login (``previous`` is None), nor when either country is unknown.
    Evidence: ``previous_country``, ``country``, ``days_inactive`` (one decimal),
    ``last_login_at`` (ISO 8601, UTC), ``client_ip``.
    """
    if previous is None or country is None or previous.country is None:
        return None
    idle = now - previous.logged_in_at
    if country == previous.country or idle < inactivity:
        return None
    return {
        "previous_country": previous.country,
        "country": country,
        "days_inactive": round(idle.total_seconds() / 86400, 1),
        "last_login_at": previous.logged_in_at.isoformat().replace("+00:00", "Z"),
        "client_ip": client_ip,
    }
