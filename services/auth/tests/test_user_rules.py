"""Registration rules: email, password and display-name policies."""

import pytest

from bulwark.auth.users.rules import (
    check_display_name,
    check_email,
    check_registration,
    normalise_email,
    password_problems,
)
from bulwark.common.problems import ValidationFailed


def test_emails_are_trimmed_lowercased_and_nfkc_normalised() -> None:
    assert normalise_email("  Alice@Example.COM ") == "alice@example.com"
    assert normalise_email("\uff21lice@example.com") == "alice@example.com"  # fullwidth A
    assert check_email(" Bob@Example.com") == "bob@example.com"


@pytest.mark.parametrize("email", ["", "plain", "a@", "@b.c", "a b@c.d", "x" * 250 + "@ex.com"])
def test_invalid_emails_are_refused(email: str) -> None:
    with pytest.raises(ValidationFailed):
        check_email(email)


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        ("Correct-Horse-9!", []),
        ("Sh0rt!", ["must be 12 to 128 characters"]),
        ("all-lower-case-9!", ["must contain an upper-case letter"]),
        ("No-Digits-Anywhere!", ["must contain a digit"]),
        ("NoSpecials123456", ["must contain a character that is neither a letter nor a digit"]),
        ("A1!" + "a" * 126, ["must be 12 to 128 characters"]),
    ],
)
def test_password_policy(password: str, expected: list[str]) -> None:
    assert password_problems(password) == expected


def test_display_names_are_trimmed_and_free_of_control_characters() -> None:
    assert check_display_name("  Ann  ") == "Ann"
    for bad in ("", "   ", "x" * 101, "a\nb", "a\u202eb", "a\x00b"):
        with pytest.raises(ValidationFailed):
            check_display_name(bad)


def test_registration_reports_every_invalid_field_at_once() -> None:
    with pytest.raises(ValidationFailed) as failed:
        check_registration("nope", "short", "")
    assert {error.field for error in failed.value.errors} == {"email", "password", "displayName"}
