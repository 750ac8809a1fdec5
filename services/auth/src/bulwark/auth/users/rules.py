"""Rules for user input: email, password and display-name policies.

Each ``check_*`` returns the normalised value or raises ``ValidationFailed`` naming the field
as the client sent it (``email``, ``password``, ``displayName``).
"""

import unicodedata

from email_validator import EmailNotValidError, validate_email

from bulwark.common.problems import FieldError, ValidationFailed
from bulwark.common.schemas import has_control_characters

MAX_EMAIL_LENGTH = 255
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 128
MAX_DISPLAY_NAME_LENGTH = 100


def normalise_email(raw: str) -> str:
    """The key an email is stored, compared and rate-limited by: NFKC, trimmed, lower-cased,
    and in email-validator's normal form when it is valid (an IDNA ``xn--`` domain and its
    Unicode spelling are one address, so they can be neither two accounts nor two buckets)."""
    email = unicodedata.normalize("NFKC", raw).strip().lower()
    try:
        return validate_email(email, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return email


def check_email(raw: str) -> str:
    """Return the normalised email if it is syntactically valid (no DNS lookups).

    Raises:
        ValidationFailed: on the ``email`` field.
    """
    email = normalise_email(raw)
    if not email or len(email) > MAX_EMAIL_LENGTH:
        raise ValidationFailed([FieldError("email", "must be 1 to 255 characters")])
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError:
        raise ValidationFailed([FieldError("email", "is not a valid email address")]) from None
    return email


def password_problems(password: str) -> list[str]:
    """Every way ``password`` breaks the policy (empty when it is acceptable)."""
    problems = []
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        problems.append(f"must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")
    if not any(char.isupper() for char in password):
        problems.append("must contain an upper-case letter")
    if not any(char.isdecimal() for char in password):
        problems.append("must contain a digit")
    if all(char.isalnum() for char in password):
        problems.append("must contain a character that is neither a letter nor a digit")
    return problems


def check_display_name(raw: str) -> str:
    """Return the trimmed display name: 1 to 100 characters, no control characters."""
    name = raw.strip()
    if not 1 <= len(name) <= MAX_DISPLAY_NAME_LENGTH:
        raise ValidationFailed([FieldError("displayName", "must be 1 to 100 characters")])
    if has_control_characters(name):
        raise ValidationFailed([FieldError("displayName", "must not contain control characters")])
    return name


def check_device_name(raw: str | None) -> str | None:
    """Return the trimmed device name (1-100 characters, no control characters) or None.

    Raises:
        ValidationFailed: on the ``device`` field.
    """
    if raw is None or not raw.strip():
        return None
    name = raw.strip()
    if len(name) > MAX_DISPLAY_NAME_LENGTH or has_control_characters(name):
        raise ValidationFailed(
            [FieldError("device", "must be at most 100 characters, without control characters")]
        )
    return name


def check_registration(email: str, password: str, display_name: str) -> tuple[str, str]:
    """Validate a registration; return ``(email, display_name)`` normalised.

    Raises:
        ValidationFailed: listing every invalid field at once.
    """
    errors: list[FieldError] = []
    checked: dict[str, str] = {}
    for field, check, value in (
        ("email", check_email, email),
        ("displayName", check_display_name, display_name),
    ):
        try:
            checked[field] = check(value)
        except ValidationFailed as failed:
            errors.extend(failed.errors)
    errors.extend(FieldError("password", problem) for problem in password_problems(password))
    if errors:
        raise ValidationFailed(errors)
    return checked["email"], checked["displayName"]
