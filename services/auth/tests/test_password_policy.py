"""The password policy's offline rules: presets, the common list, the context rules, and
messages that never echo the password (docs/passwords.md). No I/O: the breached-password
check against a real HTTP server is in tests/integration/test_password_policy.py."""

import asyncio

import pytest

from bulwark.auth.settings import from_env
from bulwark.auth.users.password_policy import (
    COMMON,
    CONTAINS_APP_NAME,
    CONTAINS_EMAIL,
    CONTAINS_NAME,
    PasswordPolicy,
    PresetName,
    is_common,
)
from bulwark.common.problems import ValidationFailed
from bulwark.common.settings import SettingsError

EMAIL = "wanda.maximoff@example.com"
NAME = "Wanda M"
LENGTH_BRIEF = "must be 12 to 128 characters"
LENGTH_NIST = "must be 15 to 128 characters"
UPPER = "must contain an upper-case letter"
DIGIT = "must contain a digit"
OTHER = "must contain a character that is neither a letter nor a digit"

pytestmark = pytest.mark.security(stride="S", asvs=("V6.2",))


def problems(
    password: str, preset: PresetName = "brief", email: str = EMAIL, name: str = NAME
) -> list[str]:
    policy = PasswordPolicy(preset)
    return asyncio.run(policy.problems(password, email=email, display_name=name))


# --- presets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        ("Correct-Horse-9!", []),
        ("Wq3!vZt", [LENGTH_BRIEF]),
        ("vortex-lantern-9!", [UPPER]),
        ("Vortex-Lantern-Quill!", [DIGIT]),
        ("VortexLantern93", [OTHER]),
        ("correct horse battery staple", [UPPER, DIGIT]),
        ("A1!" + "x9Kq" * 32, [LENGTH_BRIEF]),  # 131 characters
    ],
)
def test_brief_is_twelve_to_128_with_upper_digit_and_other(
    password: str, expected: list[str]
) -> None:
    assert problems(password, "brief") == expected


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        ("correct horse battery staple", []),  # no composition rules
        ("vortexlanternquill", []),
        ("Vortex-Lant9!q", [LENGTH_NIST]),  # 14 characters, every composition rule met
        ("vortex lantern!", []),  # 15
        ("x" + "9kqz" * 32, [LENGTH_NIST]),  # 129
    ],
)
def test_nist_is_length_only_at_least_15(password: str, expected: list[str]) -> None:
    assert problems(password, "nist") == expected


def test_lengths_count_code_points_after_nfkc() -> None:
    # 15 code points as sent, 14 after NFKC composes "e" + U+0301 into one "é".
    decomposed = "vortex lanter" + "e\u0301"
    assert len(decomposed) == 15
    assert problems(decomposed, "nist") == [LENGTH_NIST]
    assert problems(decomposed + "s", "nist") == []
    # A ligature expands: 13 code points sent, 15 after NFKC ("\ufb03" is "ffi").
    ligature = "vortex \ufb03lante"
    assert len(ligature) == 13
    assert problems(ligature, "nist") == []


# --- common passwords ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        "Password123!",
        "P@ssw0rd2024!",
        "Qwerty123456!",
        "Iloveyou2024!",  # i -> l is undone too
        "!!Dragon2024!!",
        "@Dmin12345678!",  # a look-alike at the very start
        "Hell0123456!!",  # a look-alike at the very end of the word
        "Jennifer2024!",  # names are in the lists too
        "Football#1999",
        "Passwordpassword1!",  # a common unit repeated
        "Aa1!Aa1!Aa1!Aa1!",  # a short unit repeated
        "Abcdefghijklm1!",  # a sequence
    ],
)
def test_common_passwords_are_refused_under_brief(password: str) -> None:
    assert problems(password, "brief") == [COMMON]


@pytest.mark.parametrize(
    "password",
    [
        "passwordpassword",
        "123456789012345",
        "qwertyqwerty1234",
        "!!!!!!!!!!!!!!!",
        "internationally",  # a dictionary word
    ],
)
def test_common_passwords_are_refused_under_nist(password: str) -> None:
    assert problems(password, "nist") == [COMMON]


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery staple",  # common words, but not as a whole
        "password is not my password",
        "my dragon eats 12 qwerty keys",
        "x9$Kq!2mZ7#pL0vT",
    ],
)
def test_passphrases_with_common_words_inside_are_accepted(password: str) -> None:
    assert not is_common(password)
    assert problems(password, "nist") == []


def test_the_list_lookup_is_case_insensitive() -> None:
    assert is_common("PASSWORD123!")
    assert is_common("pAsSwOrD123!")


# --- context-specific passwords -----------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        ("Wanda.Maximoff-7!", [CONTAINS_EMAIL, CONTAINS_NAME]),  # local part and name word
        ("Maxim0ff-Rules-7!", [CONTAINS_EMAIL]),  # a word of the local part, look-alike
        ("W4nd4-Rules-Now-7!", [CONTAINS_EMAIL, CONTAINS_NAME]),
        ("Bulwark2024!!x", [CONTAINS_APP_NAME]),
        ("my-BULW4RK-pass-7", [CONTAINS_APP_NAME]),
    ],
)
def test_context_specific_passwords_are_refused(password: str, expected: list[str]) -> None:
    assert problems(password, "brief") == expected


def test_short_words_of_the_context_are_not_refused() -> None:
    # "M" and "bo" are below 4 characters: refusing them would refuse half of all passwords.
    assert problems("Bo-Vortex-Lantern-M7!", email="bo@example.com", name="Bo M") == []


def test_the_app_name_is_a_setting() -> None:
    policy = PasswordPolicy("nist", app_name="Acme Wallet")
    found = asyncio.run(policy.problems("wallet of mine 2024", email=EMAIL, display_name=NAME))
    assert found == [CONTAINS_APP_NAME]
    default = asyncio.run(policy.problems("bulwark of mine 2024", email=EMAIL, display_name=NAME))
    assert default == []  # another app's name is no longer refused


def test_every_broken_rule_is_listed() -> None:
    assert problems("wanda1", "brief") == [
        LENGTH_BRIEF,
        UPPER,
        OTHER,
        COMMON,  # a first name with a digit
        CONTAINS_EMAIL,
        CONTAINS_NAME,
    ]


# --- messages -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    ["Password123!", "P@ssw0rd2024!", "Bulwark2024!!x", "Wanda.Maximoff-7!", "Wq3!vZt", "vortex"],
)
def test_messages_never_echo_the_password_nor_a_part_of_it(password: str) -> None:
    with pytest.raises(ValidationFailed) as failed:
        asyncio.run(
            PasswordPolicy("brief").check(password, email=EMAIL, display_name=NAME, field="new")
        )
    errors = failed.value.errors
    assert errors
    assert {error.field for error in errors} == {"new"}
    for error in errors:
        text = error.message.casefold()
        for piece in {password, "p@ssw0rd", "bulwark", "wanda", "maximoff", "vortex"}:
            assert piece.casefold() not in text, (piece, error.message)


def test_check_accepts_a_good_password() -> None:
    asyncio.run(PasswordPolicy().check("Correct-Horse-9!", email=EMAIL, display_name=NAME))


# --- settings -----------------------------------------------------------------------------

BASE = {"DATABASE_URL": "postgresql://x/y"}


def test_policy_settings_defaults() -> None:
    settings = from_env(BASE)
    assert settings.password_policy == "brief"
    assert settings.app_name == "Bulwark"
    assert settings.breach_check == "off"
    assert settings.hibp_range_url == "https://api.pwnedpasswords.com/range/"
    assert settings.hibp_timeout == 1.0
    assert settings.breach_check_unreachable == "allow"


def test_policy_settings_are_read_and_bounded() -> None:
    settings = from_env(
        {
            **BASE,
            "PASSWORD_POLICY": "nist",
            "APP_NAME": "Acme",
            "BREACHED_PASSWORD_CHECK": "hibp",
            "HIBP_RANGE_URL": "http://127.0.0.1:9/range/",
            "HIBP_TIMEOUT_SECONDS": "5",
            "BREACHED_PASSWORD_UNREACHABLE": "deny",
        }
    )
    assert (settings.password_policy, settings.app_name) == ("nist", "Acme")
    assert (settings.breach_check, settings.breach_check_unreachable) == ("hibp", "deny")
    assert (settings.hibp_range_url, settings.hibp_timeout) == ("http://127.0.0.1:9/range/", 5)
    for name, bad in (
        ("PASSWORD_POLICY", "lax"),
        ("BREACHED_PASSWORD_CHECK", "on"),
        ("BREACHED_PASSWORD_UNREACHABLE", "maybe"),
        ("HIBP_TIMEOUT_SECONDS", "5.5"),
        ("HIBP_TIMEOUT_SECONDS", "0"),
    ):
        with pytest.raises(SettingsError, match=name):
            from_env({**BASE, name: bad})


def test_the_range_url_must_be_https_outside_development_and_test() -> None:
    production = {
        **BASE,
        "BULWARK_ENV": "production",
        "ISSUER": "https://auth.example",
        "KEYS_DIR": "/k",
        "REDIS_URL": "rediss://cache:6380/0",
        "EMAIL_FINGERPRINT_KEY": "k" * 32,
        "APP_VERSIONS_URL": "http://bulwark-api:8000/v1/app-versions",
        "SMTP_URL": "smtps://mail.example",
        "MAIL_FROM": "Bulwark <no-reply@auth.example>",
    }
    assert from_env(production).hibp_range_url.startswith("https://")
    with pytest.raises(SettingsError, match="HIBP_RANGE_URL"):
        from_env({**production, "HIBP_RANGE_URL": "http://pwned.internal/range/"})
