"""Redaction: secret field names at any depth and secret-looking values anywhere."""

import dataclasses
import datetime

import hypothesis
import msgspec
import pytest
from hypothesis import strategies as st

from bulwark.common import redaction
from bulwark.common.redaction import (
    MAX_DEPTH,
    REDACTED,
    TRUNCATED,
    is_secret_field,
    redact_text,
    redact_value,
)

pytestmark = pytest.mark.security(stride="I", asvs=("V14.2", "V16.2"))

JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
REFRESH = "brt_" + "A" * 43


def test_secret_field_names_are_redacted_case_insensitively_at_any_depth() -> None:
    event = {
        "Password": "hunter2",
        "nested": {"refresh_token": "x", "list": [{"Authorization": "y"}], "ok": "kept"},
        "X-Api-Key": "k",
        "card_number": "4111",
        "CVV": "123",
    }
    redacted = redact_value(event)
    assert redacted["Password"] == REDACTED
    assert redacted["nested"]["refresh_token"] == REDACTED
    assert redacted["nested"]["list"][0]["Authorization"] == REDACTED
    assert redacted["nested"]["ok"] == "kept"
    assert redacted["X-Api-Key"] == REDACTED
    assert redacted["card_number"] == REDACTED
    assert redacted["CVV"] == REDACTED


@pytest.mark.parametrize(
    "name",
    [
        "access_token",
        "ID_TOKEN",
        "Set-Cookie",
        "client_secret",
        "code_verifier",  # PKCE, RFC 7636
        "device_code",  # RFC 8628
        "userCode",  # RFC 8628 user_code
        "authorization_code",
        "auth_code",
        "creditCardNumber",
        "cvc",
        "SSN",
        "social_security_number",
        "otp",
        "private_key",
        "pan",  # exact short names only
        "pin",
        b"authorization",  # bytes keys (ASGI headers)
    ],
)
def test_blocklisted_names(name: str | bytes) -> None:
    assert is_secret_field(name)
    assert redact_value({name: "v"}) == {
        name.decode() if isinstance(name, bytes) else name: REDACTED
    }


@pytest.mark.parametrize(
    "name", ["request_id", "user_id", "route", "event", "company", "pinned", "code", "kids"]
)
def test_ordinary_names_are_kept(name: str) -> None:
    assert not is_secret_field(name)


def test_keys_that_are_not_strings_become_strings_and_are_still_checked() -> None:
    assert redact_value({1: "a", b"cookie": "c", (1, 2): "t"}) == {
        "1": "a",
        "cookie": REDACTED,
        "(1, 2)": "t",
    }


def test_header_pairs_with_secret_names_have_their_values_masked() -> None:
    headers = [(b"authorization", b"Basic dXNlcjpwYXNz"), (b"cookie", b"sid=abc"), ("x", "y")]
    assert redact_value({"headers": headers}) == {
        "headers": [["authorization", REDACTED], ["cookie", REDACTED], ["x", "y"]]
    }


def test_structs_dataclasses_and_other_objects_are_redacted_not_stringified_raw() -> None:
    class Login(msgspec.Struct):
        email: str
        password: str

    @dataclasses.dataclass
    class Grant:
        refresh_token: str
        note: str

    class Opaque:
        def __str__(self) -> str:
            return f"opaque {JWT}"

    redacted = redact_value(
        {"body": Login("a@b.c", "pw"), "grant": Grant("t", f"see {REFRESH}"), "o": Opaque()}
    )
    assert redacted == {
        "body": {"email": "a@b.c", "password": REDACTED},
        "grant": {"refresh_token": REDACTED, "note": f"see {REDACTED}"},
        "o": f"opaque {REDACTED}",
    }
    assert redact_value({"error": ValueError(f"bad {JWT}")}) == {"error": f"bad {REDACTED}"}
    assert redact_value(b"token " + REFRESH.encode()) == f"token {REDACTED}"


def test_deep_and_cyclic_values_are_cut() -> None:
    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    value = redact_value(cyclic)
    for _ in range(MAX_DEPTH):
        value = value["self"]
    assert value == TRUNCATED


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"user sent {JWT} here", JWT),
        (f"jwe {JWT}.part4.part5", "part4.part5"),
        ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ("basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        (f"refresh {REFRESH}", REFRESH),
        ("GET /v1/me?access_token=opaque123&x=1", "opaque123"),
        ("grant_type=refresh_token&refresh_token=abc123&client_id=x", "abc123"),
        ("code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", "dBjftJeZ4CVP"),
        ("device_code=GmRhmhcxhwAzkoEqiMEg_DnyEysNkuNhszIySk9eS", "GmRhmhcxhw"),
        ("user_code: WDJB-MJHT", "WDJB-MJHT"),
        ("{'password': 'correct horse', 'email': 'x'}", "correct horse"),
        ('{"client_secret": "s3cr3t", "ok": 1}', "s3cr3t"),
        ("Cookie: theme=dark; session=abc123", "abc123"),
        ("ssn 078-05-1120 end", "078-05-1120"),
        ("ssn 078 05 1120 end", "078 05 1120"),
        ("ssn:078-05-1120", "078-05-1120"),
    ],
)
def test_secret_values_are_redacted_wherever_they_appear(text: str, secret: str) -> None:
    cleaned = redact_text(text)
    assert secret not in cleaned
    assert REDACTED in cleaned


@pytest.mark.parametrize(
    "card",
    [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111 - 1111 - 1111 - 1111",  # sloppy separators
        "3782 822463 10005",  # American Express, 15 digits in 4-6-5
        "6011000990139424",
    ],
)
def test_card_numbers_that_pass_luhn_are_redacted_however_grouped(card: str) -> None:
    cleaned = redact_text(f"pay with {card} today")
    assert cleaned == f"pay with {REDACTED} today"


def test_a_card_after_other_digits_is_still_found() -> None:
    assert redact_text("qty 2 4111 1111 1111 1111") == f"qty 2 {REDACTED}"
    assert redact_text("card:4111111111111111;") == f"card:{REDACTED};"


@pytest.mark.parametrize(
    "text",
    [
        "order 1234 5678 9012 3456",  # 16 digits, fails Luhn
        "order 1234567890123456",
        "user 12345678-1234-4234-9234-123456789012",  # a UUID of digits only is an id
        "trace 4bf92f3577b34da6a3ce929d0e0e4736 4111111111111111abc",  # inside hex / words
        "ts 2024-05-01T12:00:00.123456Z latency 12.5",
        "phone +1 555-0100",
    ],
)
def test_numbers_that_are_not_cards_are_kept(text: str) -> None:
    assert redact_text(text) == text


def test_plain_values_pass_through() -> None:
    event = {"status": 200, "latency_ms": 1.5, "ok": True, "none": None, "route": "/v1/notes"}
    assert redact_value(event) == event


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("{'password': ['hunter2']}", "hunter2"),  # form data parsed into lists
        ("{b'password': [b'hunter2']}", "hunter2"),
        ("{'password': b'hunter2'}", "hunter2"),
        ("connect postgresql://bulwark:Hunter2Pass@db:5432/auth failed", "Hunter2Pass"),
        ("redis://:Hunter2Pass@cache:6379/0 timed out", "Hunter2Pass"),
    ],
)
def test_reprs_and_url_passwords(text: str, secret: str) -> None:
    redacted = redact_text(text)
    assert secret not in redacted
    assert REDACTED in redacted


def test_a_url_without_a_password_is_kept() -> None:
    for text in ("https://example.com/a:b@c", "postgresql://bulwark@db:5432/auth"):
        assert redact_text(text) == text


_OFFSETS = st.integers(-1439, 1439).map(lambda minutes: datetime.timedelta(minutes=minutes))


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(
    st.one_of(
        st.text(alphabet=st.sampled_from("0123456789abcdefXYZ"), max_size=40),
        st.text(alphabet=st.sampled_from("0123456789 -_.:=/@eyJbrt"), max_size=60),
        st.text(max_size=300),
        st.datetimes(timezones=st.builds(datetime.timezone, _OFFSETS)).map(
            lambda moment: moment.isoformat().replace("+00:00", "Z")
        ),
        st.from_regex(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)\Z"),
    )
)
@hypothesis.example("4111-1111-1111-1111")  # digits and dashes, as a timestamp has
@hypothesis.example("4111 1111 1111 1111")
@hypothesis.example("2026-12-07T02:04:06.4111111111111111Z")
@hypothesis.example("078-05-1120")
def test_the_shortcuts_redact_exactly_as_the_full_scan(text: str) -> None:
    """The alphanumeric and timestamp shortcuts and the cache of short texts never change a
    result."""
    assert redaction.redact_text(text) == redaction._redact_text(text)
    assert redaction.redact_text(text) == redaction._redact_text(text)  # from the cache


def test_a_card_number_alone_is_still_masked_by_the_shortcut_path() -> None:
    assert redaction.redact_text("4111111111111111") == redaction.REDACTED
