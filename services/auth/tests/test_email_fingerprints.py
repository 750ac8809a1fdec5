"""Email fingerprints in failed-login log lines: keyed, stable, not reversible without the key,
and a key that production must set."""

import hashlib
import hmac

import pytest

from bulwark.auth.security_events import email_fingerprint
from bulwark.auth.settings import DEVELOPMENT_EMAIL_FINGERPRINT_KEY, from_env
from bulwark.common.settings import SettingsError

pytestmark = pytest.mark.security(stride="I", asvs=("V14.2", "V16.2"))

KEY = b"k" * 32


def test_a_fingerprint_is_a_truncated_hmac_sha256_of_the_normalised_email() -> None:
    expected = hmac.new(KEY, b"alice@example.com", hashlib.sha256).hexdigest()[:16]
    assert email_fingerprint(KEY, "alice@example.com") == expected
    assert email_fingerprint(KEY, "alice@example.com") == expected  # stable: can be grouped


def test_fingerprints_depend_on_the_key_and_the_email() -> None:
    alice = email_fingerprint(KEY, "alice@example.com")
    assert email_fingerprint(KEY, "bob@example.com") != alice
    assert email_fingerprint(b"j" * 32, "alice@example.com") != alice
    # An unkeyed digest of a guessed email does not match it.
    assert hashlib.sha256(b"alice@example.com").hexdigest()[:16] != alice


def test_production_needs_its_own_fingerprint_key() -> None:
    production = {
        "BULWARK_ENV": "production",
        "DATABASE_URL": "postgresql://x/y",
        "ISSUER": "https://auth.example",
        "KEYS_DIR": "/k",
        "REDIS_URL": "redis://cache:6379/0",
        "APP_VERSIONS_URL": "http://api:8000/v1/app-versions",
        "SMTP_URL": "smtps://mail.example",
        "MAIL_FROM": "Bulwark <no-reply@auth.example>",
    }
    with pytest.raises(SettingsError, match="EMAIL_FINGERPRINT_KEY must be set"):
        from_env(production)
    dev_key = {"EMAIL_FINGERPRINT_KEY": DEVELOPMENT_EMAIL_FINGERPRINT_KEY}
    with pytest.raises(SettingsError, match="development key"):
        from_env({**production, **dev_key})
    with pytest.raises(SettingsError, match="at least 32"):
        from_env({**production, "EMAIL_FINGERPRINT_KEY": "short"})
    settings = from_env({**production, "EMAIL_FINGERPRINT_KEY": "p" * 40})
    assert settings.email_fingerprint_key == b"p" * 40
    assert from_env({"DATABASE_URL": "postgresql://x/y"}).email_fingerprint_key == (
        DEVELOPMENT_EMAIL_FINGERPRINT_KEY.encode()
    )
