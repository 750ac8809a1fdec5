"""Note rules: control characters and the opaque cursor."""

import base64
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulwark.api.notes.rules import Cursor, check_text, decode_cursor, encode_cursor
from bulwark.common.problems import ValidationFailed

pytestmark = pytest.mark.security(stride="T", asvs=("V2.2",))


def test_cursor_round_trip() -> None:
    cursor = Cursor(created_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), id=uuid.uuid4())
    assert decode_cursor(encode_cursor(cursor)) == cursor


@pytest.mark.parametrize("raw", ["", "garbage", "W10", "eyJhIjoxfQ", "%%%"])
def test_foreign_cursors_are_a_validation_error(raw: str) -> None:
    with pytest.raises(ValidationFailed):
        decode_cursor(raw)


def test_titles_are_trimmed_and_bodies_keep_newlines() -> None:
    assert check_text("title", "  hi ", multiline=False) == "hi"
    assert check_text("body", "line 1\nline 2\t", multiline=True) == "line 1\nline 2\t"
    for field, text, multiline in (
        ("title", "a\nb", False),
        ("title", "   ", False),
        ("body", "a\x00b", True),
        ("body", "a\u202eb", True),
    ):
        with pytest.raises(ValidationFailed):
            check_text(field, text, multiline=multiline)


# --- hostile cursors ----------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "raw",
    [
        _b64(b"[" * 5000),
        _b64(b'["2026-01-01T00:00:00Z", "' + b"0" * 5000 + b'"]'),
        _b64(b'["2026-01-01T00:00:00Z", "00000000-0000-0000-0000-000000000000", 1]'),
        _b64(b'["\\ud800", "00000000-0000-0000-0000-000000000000"]'),
        _b64(b'["2026-01-01T00:00:00Z", "00000000-0000-0000-0000-000000000000"] x'),
        _b64(b'["2026-01-01T00:00:00", "00000000-0000-0000-0000-000000000000"]'),  # no zone
        _b64(b'["9999-12-31T23:59:59-14:00", "00000000-0000-0000-0000-000000000000"]'),
        _b64(b'["0001-01-01T00:00:00+14:00", "00000000-0000-0000-0000-000000000000"]'),
        _b64(b'{"created_at": 0, "id": 0}'),
        "A" * 201,
        "W10=",  # padded
        "W1 0",
        "W1+0",
        "W\u00e910",
        "\x00",
        "x",  # a length no base64 has
    ],
)
def test_hostile_cursors_are_a_validation_error(raw: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        decode_cursor(raw)
    assert [error.field for error in refused.value.errors] == ["cursor"]


@settings(max_examples=300, deadline=timedelta(seconds=1))
@given(
    st.text(max_size=300)
    | st.binary(max_size=200).map(_b64)
    | st.tuples(st.datetimes(timezones=st.timezones()), st.uuids()).map(
        lambda pair: _b64(f'["{pair[0].isoformat()}", "{pair[1]}"]'.encode())
    )
)
def test_fuzz_a_cursor_is_a_cursor_or_a_validation_error(raw: str) -> None:
    try:
        cursor = decode_cursor(raw)
    except ValidationFailed as refused:
        fields = [error.field for error in refused.errors]
    else:
        fields = []
        assert cursor.created_at.tzinfo is not None
        assert 1 <= cursor.created_at.astimezone(UTC).year <= 9999
    assert fields in ([], ["cursor"])
