"""The login detector's rules: which header values are countries, which logins are flagged,
and its settings."""

from datetime import UTC, datetime, timedelta

import pytest

from bulwark.auth.anomalies.rules import LastLogin, new_country_after_inactivity, parse_country
from bulwark.auth.settings import from_env
from bulwark.common.settings import SettingsError

pytestmark = pytest.mark.security(stride="SR", asvs=("V16.3",))

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
MONTH = timedelta(days=30)


@pytest.mark.parametrize(
    ("raw", "country"),
    [
        ("DE", "DE"),
        (" br ", "BR"),
        ("us", "US"),
        (None, None),
        ("", None),
        ("Germany", None),
        ("D", None),
        ("D3", None),
        ("T1", None),  # Cloudflare's Tor marker
        ("XX", None),  # "unknown"
        ("zz", None),
        ("ÄÖ", None),  # letters, but not ASCII
        ("DE,FR", None),
    ],
)
def test_parse_country_takes_only_iso_alpha_2(raw: str | None, country: str | None) -> None:
    assert parse_country(raw) == country


def _check(previous: LastLogin | None, country: str | None) -> dict[str, object] | None:
    return new_country_after_inactivity(
        previous, country, now=NOW, inactivity=MONTH, client_ip="203.0.113.9"
    )


def test_new_country_after_the_inactivity_threshold_is_flagged_with_evidence() -> None:
    last = NOW - timedelta(days=45, hours=12)
    assert _check(LastLogin(last, "DE"), "BR") == {
        "previous_country": "DE",
        "country": "BR",
        "days_inactive": 45.5,
        "last_login_at": "2025-04-17T00:00:00Z",
        "client_ip": "203.0.113.9",
    }
    assert _check(LastLogin(NOW - MONTH, "DE"), "BR") is not None  # exactly the threshold


@pytest.mark.parametrize(
    ("previous", "country"),
    [
        (None, "BR"),  # first login ever
        (LastLogin(NOW - timedelta(days=400), "DE"), "DE"),  # same country
        (LastLogin(NOW - MONTH + timedelta(seconds=1), "DE"), "BR"),  # not inactive long enough
        (LastLogin(NOW - timedelta(days=400), None), "BR"),  # no known country before
        (LastLogin(NOW - timedelta(days=400), "DE"), None),  # no country now
    ],
)
def test_other_logins_are_not_flagged(previous: LastLogin | None, country: str | None) -> None:
    assert _check(previous, country) is None


def test_settings_defaults_and_validation() -> None:
    base = {"DATABASE_URL": "postgresql://x/y"}
    settings = from_env(base)
    assert settings.geo_country_header == "cloudfront-viewer-country"
    assert settings.anomaly_inactivity_days == 30
    custom = from_env(
        {**base, "GEO_COUNTRY_HEADER": "CF-IPCountry", "ANOMALY_INACTIVITY_DAYS": "7"}
    )
    assert (custom.geo_country_header, custom.anomaly_inactivity_days) == ("cf-ipcountry", 7)
    with pytest.raises(SettingsError, match="GEO_COUNTRY_HEADER"):
        from_env({**base, "GEO_COUNTRY_HEADER": "Country: DE"})
    with pytest.raises(SettingsError, match="ANOMALY_INACTIVITY_DAYS"):
        from_env({**base, "ANOMALY_INACTIVITY_DAYS": "0"})
