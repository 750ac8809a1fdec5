"""Note rules: control characters and the opaque cursor."""

import uuid
from datetime import UTC, datetime

import pytest

from bulwark.api.notes.rules import Cursor, check_text, decode_cursor, encode_cursor
from bulwark.common.problems import ValidationFailed


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
