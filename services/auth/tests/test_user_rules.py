"""Registration rules: email, password and display-name policies."""

import asyncio
import unicodedata
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulwark.auth.users.password_policy import PRESETS, PasswordPolicy, offline_problems
from bulwark.auth.users.rules import (
    check_display_name,
    check_email,
    check_registration,
    normalise_email,
)
from bulwark.common.problems import ValidationFailed
from bulwark.ratelimit.rules import normalize_identity

pytestmark = pytest.mark.security(stride="T", asvs=("V2.2",))


@pytest.mark.security(stride="S", asvs=("V1.1",))
def test_emails_are_trimmed_lowercased_and_nfkc_normalised() -> None:
    assert normalise_email("  Alice@Example.COM ") == "alice@example.com"
    assert normalise_email("\uff21lice@example.com") == "alice@example.com"  # fullwidth A
    assert check_email(" Bob@Example.com") == "bob@example.com"


@pytest.mark.parametrize("email", ["", "plain", "a@", "@b.c", "a b@c.d", "x" * 250 + "@ex.com"])
def test_invalid_emails_are_refused(email: str) -> None:
    with pytest.raises(ValidationFailed):
        check_email(email)


@pytest.mark.security(stride="S", asvs=("V6.2",))
@pytest.mark.parametrize(
    ("password", "expected"),
    [
        ("Correct-Horse-9!", []),
        ("Wq3!vZt", ["must be 12 to 128 characters"]),
        ("all-lower-case-9!", ["must contain an upper-case letter"]),
        ("No-Digits-Anywhere!", ["must contain a digit"]),
        ("NoSpecials123456", ["must contain a character that is neither a letter nor a digit"]),
        ("A1!" + "a" * 126, ["must be 12 to 128 characters"]),
    ],
)
def test_password_policy(password: str, expected: list[str]) -> None:
    context = {"email": "ann@example.com", "display_name": "Ann", "app_name": "Bulwark"}
    assert offline_problems(password, PRESETS["brief"], **context) == expected


def test_display_names_are_trimmed_and_free_of_control_characters() -> None:
    assert check_display_name("  Ann  ") == "Ann"
    for bad in ("", "   ", "x" * 101, "a\nb", "a\u202eb", "a\x00b"):
        with pytest.raises(ValidationFailed):
            check_display_name(bad)


POLICY = PasswordPolicy()


def test_registration_reports_every_invalid_field_at_once() -> None:
    with pytest.raises(ValidationFailed) as failed:
        asyncio.run(check_registration("nope", "short", "", POLICY))
    assert {error.field for error in failed.value.errors} == {"email", "password", "displayName"}


# --- one email rule for registration and login --------------------------------------------

GOOD_PASSWORD = "Correct-Horse-9!"


def _email_errors(email: str) -> list[tuple[str, str]] | None:
    """The errors ``normalise_email`` (login's rule) gives ``email``, or None."""
    try:
        normalise_email(email)
    except ValidationFailed as failed:
        return [(error.field, error.message) for error in failed.errors]
    return None


def _registration_errors(email: str) -> list[tuple[str, str]] | None:
    try:
        asyncio.run(check_registration(email, GOOD_PASSWORD, "Ann", POLICY))
    except ValidationFailed as failed:
        return [(error.field, error.message) for error in failed.errors]
    return None


@pytest.mark.parametrize(
    "email",
    [
        "a\u200bb@example.com",  # zero-width space
        "ab@example.com\u200b",  # ... at the end, where a trim would not see it
        "\u200bab@example.com",
        "a\u200db@example.com",  # zero-width joiner
        "a\u2060b@example.com",  # word joiner
        "\ufeffab@example.com",  # BOM
        "a\u00adb@example.com",  # soft hyphen
        "a\u202eb@example.com",  # right-to-left override
        "ab@exa\u200bmple.com",  # in the domain
        "a\x00b@example.com",
        "ab@example.com\n",
        "\tab@example.com",
        "ab@example.com\u2028",
        "a\ue000b@example.com",  # private use
        "a\U000e0041b@example.com",  # a tag character
        "a\u0378b@example.com",  # unassigned
    ],
)
def test_invisible_and_control_characters_are_refused_wherever_they_stand(email: str) -> None:
    errors = _email_errors(email)
    assert errors == [("email", "must not contain control, format or invisible characters")]
    assert _registration_errors(email) == errors


@pytest.mark.parametrize(
    ("local", "accepted"),
    [
        ("a" * 64, True),
        ("a" * 65, False),
        ("\u00e9" * 32, True),  # 64 octets in UTF-8
        ("\u00e9" * 32 + "a", False),  # 33 characters, 65 octets
        ("\uff41" * 64, True),  # fullwidth: NFKC makes it 64 ASCII octets
    ],
)
def test_a_local_part_is_at_most_64_octets(local: str, accepted: bool) -> None:
    email = f"{local}@example.com"
    errors = _email_errors(email)
    assert (errors is None) == accepted, errors
    assert _registration_errors(email) == errors
    if not accepted:
        assert errors == [("email", "must have at most 64 octets before the @")]


def test_an_address_is_at_most_254_octets() -> None:
    domain = ".".join(["d" * 61, "d" * 60, "d" * 60, "example", "com"])  # 195 octets
    assert len(domain) == 195
    assert normalise_email(f"{'a' * 58}@{domain}")  # 254
    for email in (f"{'a' * 59}@{domain}", "a@" + "b" * 2000 + ".com", "a" * 5000):
        assert _email_errors(email) == _registration_errors(email) is not None


@pytest.mark.security(stride="S", asvs=("V1.1",))
@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Ann@Example.com", " ann@example.COM "),
        ("\uff21nn@example.com", "ann@example.com"),  # fullwidth
        ("ann@ex\u00e4mple.com", "ann@xn--exmple-cua.com"),  # IDNA
        ("ann@EX\u00c4MPLE.com", "ann@xn--exmple-cua.com"),
        ("e\u0301@example.com", "\u00e9@example.com"),  # combining accent
        ("ann@example\uff0ecom", "ann@example.com"),  # fullwidth full stop
        ("ann\uff20example.com", "ann@example.com"),  # fullwidth commercial at
        ("ann@example.com\u3000", "ann@example.com"),  # ideographic space, trimmed
    ],
)
def test_spellings_of_one_address_are_one_key(first: str, second: str) -> None:
    assert normalise_email(first) == normalise_email(second)


@pytest.mark.parametrize(
    "email",
    [
        "",
        "   ",
        "plain",
        "a@",
        "@b.c",
        "a b@c.d",
        "a@b",
        "a@[127.0.0.1]",
        '"a b"@example.com',
        "Ann <a@example.com>",
        "a..b@example.com",
        "a@example.com.",
        "a@-example.com",
    ],
)
def test_what_is_not_an_address_is_refused_the_same_way_at_both(email: str) -> None:
    errors = _email_errors(email)
    assert errors is not None
    assert [field for field, _ in errors] == ["email"]
    assert _registration_errors(email) == errors


# --- fuzz ---------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=timedelta(seconds=1))
_EMAILISH = st.builds(
    lambda local, at, domain: f"{local}{at}{domain}",
    st.text(max_size=70),
    st.sampled_from(["@", "\uff20", "@@", ""]),
    st.text(max_size=30) | st.from_regex(r"[a-z0-9\-]{1,20}(\.[a-z]{2,6}){1,2}", fullmatch=True),
)


@pytest.mark.security(stride="S", asvs=("V1.1",))
@FUZZ
@given(st.text(max_size=400) | _EMAILISH)
def test_fuzz_an_email_is_one_key_or_one_refusal_at_both(raw: str) -> None:
    errors = _email_errors(raw)
    assert _registration_errors(raw) == errors
    if errors is not None:
        assert [field for field, _ in errors] == ["email"]
        return
    key = normalise_email(raw)
    assert normalise_email(key) == key  # a key is its own key
    assert normalize_identity(key) == key  # and the rate limiter's bucket
    local, _, _ = key.rpartition("@")
    assert 0 < len(local.encode()) <= 64
    assert len(key.encode()) <= 254
    assert not any(unicodedata.category(c) in {"Cc", "Cf", "Cs", "Co", "Cn"} for c in key)
