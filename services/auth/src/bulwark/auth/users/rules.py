"""Rules for user input: email and display-name policies, and registration as a whole
(the password policy is `bulwark.auth.users.password_policy`).

Each ``check_*`` returns the normalised value or raises ``ValidationFailed`` naming the field
as the client sent it (``email``, ``password``, ``displayName``). ``normalise_email`` is the
one email rule, called by registration and login alike.
"""

import unicodedata

from email_validator import EmailNotValidError, validate_email

from bulwark.auth.users.password_policy import PasswordPolicy
from bulwark.common.problems import FieldError, ValidationFailed
from bulwark.common.schemas import has_control_characters

#: RFC 5321 §4.5.3.1.3: a path is at most 256 octets with its angle brackets, so an
#: address is at most 254 (in UTF-8, RFC 6531).
MAX_EMAIL_OCTETS = 254
#: RFC 5321 §4.5.3.1.1: a local part is at most 64 octets.
MAX_LOCAL_PART_OCTETS = 64
MAX_DISPLAY_NAME_LENGTH = 100
# Never in an address, wherever they stand: controls (NUL, newlines), format characters
# (zero-width spaces and joiners, bidi overrides, soft hyphens, BOM), surrogates, private
# use, unassigned code points, line and paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _refuse(message: str) -> ValidationFailed:
    return ValidationFailed([FieldError("email", message)])


def normalise_email(raw: str) -> str:
    """The one form of an email address: the key it is stored, compared and rate-limited
    by, used alike by registration and login so that both accept and refuse the same inputs
    the same way.

    NFKC, trimmed, lower-cased, then email-validator's normal form, lower-cased (an IDNA
    ``xn--`` domain and its Unicode spelling are one address, so they can be neither two
    accounts nor two buckets). Not ``casefold()``: ``straße@`` and ``strasse@`` stay two.

    Raises:
        ValidationFailed: on the ``email`` field (400): an invisible, control or unassigned
            character anywhere (before or after normalisation); a local part over 64 octets
            or an address over 254 (RFC 5321); or not an address (no DNS lookups).
    """
    if len(raw) > 4 * MAX_EMAIL_OCTETS:
        raise _refuse(f"must be at most {MAX_EMAIL_OCTETS} octets")
    if any(unicodedata.category(char) in _REFUSED_CATEGORIES for char in raw):
        raise _refuse("must not contain control, format or invisible characters")
    email = unicodedata.normalize("NFKC", raw).strip().lower()
    if not email:
        raise _refuse("is required")
    try:
        valid = validate_email(
            email,
            check_deliverability=False,
            allow_smtputf8=True,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
            allow_empty_local=False,
        )
    except EmailNotValidError:
        raise _refuse("is not a valid email address") from None
    normalised = unicodedata.normalize("NFKC", valid.normalized).lower()
    local, _, _ = normalised.rpartition("@")
    if len(local.encode()) > MAX_LOCAL_PART_OCTETS:
        raise _refuse(f"must have at most {MAX_LOCAL_PART_OCTETS} octets before the @")
    if len(normalised.encode()) > MAX_EMAIL_OCTETS:
        raise _refuse(f"must be at most {MAX_EMAIL_OCTETS} octets")
    if any(unicodedata.category(char) in _REFUSED_CATEGORIES for char in normalised):
        raise _refuse("must not contain control, format or invisible characters")
    return normalised


def check_email(raw: str) -> str:
    """`normalise_email` under the name of the other ``check_*`` rules."""
    return normalise_email(raw)


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


async def check_registration(
    email: str, password: str, display_name: str, policy: PasswordPolicy
) -> tuple[str, str]:
    """Validate a registration; return ``(email, display_name)`` normalised. The password
    is held to ``policy`` (docs/passwords.md) with the email and display name as context.

    Raises:
        ValidationFailed: listing every invalid field at once (400).
        PasswordCheckUnavailable: the breached-password check could not be made and its
            answer is ``deny`` (503).
    """
    errors: list[FieldError] = []
    checked: dict[str, str] = {"email": email, "displayName": display_name}
    for field, check, value in (
        ("email", check_email, email),
        ("displayName", check_display_name, display_name),
    ):
        try:
            checked[field] = check(value)
        except ValidationFailed as failed:
            errors.extend(failed.errors)
    problems = await policy.problems(
        password, email=checked["email"], display_name=checked["displayName"]
    )
    errors.extend(FieldError("password", problem) for problem in problems)
    if errors:
        raise ValidationFailed(errors)
    return checked["email"], checked["displayName"]
