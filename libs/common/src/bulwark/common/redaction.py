"""Redaction of secrets from log events, by field name and by value pattern.

Applied by the logging pipeline to every event (exception text included) before it is
rendered, so no processor or caller can forget it. Field names follow OWASP's Logging Cheat
Sheet list of data never to log; value patterns catch secrets that appear under innocent
names (a JWT in a free-text message, a bearer credential inside a header dump).
"""

import re
from typing import Any

REDACTED = "[REDACTED]"

# Normalised (lower case, no separators) field names whose values are never written.
_SECRET_FIELD_PARTS = (
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "cookie",
    "apikey",
    "privatekey",
    "cardnumber",
    "cvv",
    "cvc",
    "ssn",
    "codeverifier",
    "devicecode",
    "clientsecret",
)

_VALUE_PATTERNS = (
    # JWS compact serialisation (JWTs): three base64url segments, header starting '{"'.
    re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*"),
    # Bearer or Basic credentials (RFC 6750 §2.1, RFC 7617).
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"),
    # Bulwark refresh tokens: 'brt_' + 43 base64url characters (256 bits).
    re.compile(r"brt_[A-Za-z0-9_-]{20,}"),
    # US social security numbers.
    re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),
)
_CARD_CANDIDATE = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def is_secret_field(name: str) -> bool:
    """True when a field called ``name`` must never be logged (case and separators ignored)."""
    normalised = _normalise(name)
    return any(part in normalised for part in _SECRET_FIELD_PARTS)


def _luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _redact_card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return REDACTED if 13 <= len(digits) <= 19 and _luhn_valid(digits) else match.group(0)


def redact_text(text: str) -> str:
    """Return ``text`` with every secret-looking value (JWT, bearer, refresh token, card) masked."""
    for pattern in _VALUE_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return _CARD_CANDIDATE.sub(_redact_card, text)


def redact_value(value: Any) -> Any:
    """Redact ``value`` recursively: secret field names in mappings, secret patterns in strings."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            key: REDACTED if isinstance(key, str) and is_secret_field(key) else redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set):
        return [redact_value(item) for item in value]
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    return value


def redact_event(_logger: object, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: redact the whole event dict (see ``redact_value``)."""
    redacted: dict[str, Any] = redact_value(event_dict)
    return redacted
