"""The account-deletion stream's contract (`bulwark.common.account_deletions`): its key, the
entry's fields as text, and what the consumer refuses as malformed. No I/O: `publish`
against a real Redis is in tests/integration/test_account_deletions.py."""

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from bulwark.common.account_deletions import (
    MalformedDeletionError,
    parse,
    rfc3339_utc,
    stream_key,
)

USER = uuid.UUID("8e03978e-40d5-43e8-bc93-6894a57f9324")


def test_the_stream_key_follows_the_services_prefix() -> None:
    assert stream_key("bulwark:") == "bulwark:account-deletions"
    assert stream_key("") == "account-deletions"


def test_deleted_at_is_rfc3339_in_utc_and_a_naive_time_is_refused() -> None:
    paris = timezone(timedelta(hours=1))
    moment = datetime(2026, 12, 7, 17, 57, 50, 123456, tzinfo=paris)
    assert rfc3339_utc(moment) == "2026-12-07T16:57:50.123456Z"
    with pytest.raises(ValueError, match="time zone"):
        rfc3339_utc(datetime(2026, 12, 7, 16, 57, 50))  # noqa: DTZ001  # naive on purpose


def test_an_entry_parses_from_bytes_or_text_and_ignores_other_fields() -> None:
    text = {"user_id": str(USER), "deleted_at": "2026-12-07T16:57:50Z", "version": "2"}
    parsed = parse(text)
    assert parsed.user_id == USER
    assert parsed.deleted_at == datetime(2026, 12, 7, 16, 57, 50, tzinfo=UTC)
    assert parse({k.encode(): v.encode() for k, v in text.items()}) == parsed


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"user_id": str(USER)},
        {"deleted_at": "2026-12-07T16:57:50Z"},
        {"user_id": "not-a-uuid", "deleted_at": "2026-12-07T16:57:50Z"},
        {"user_id": str(USER), "deleted_at": "yesterday"},
        {"user_id": str(USER), "deleted_at": "2026-12-07T16:57:50"},  # no time zone
    ],
)
def test_malformed_entries_are_refused(fields: dict[str, str]) -> None:
    with pytest.raises(MalformedDeletionError):
        parse(fields)


def test_undecodable_bytes_are_malformed_not_a_crash() -> None:
    with pytest.raises(MalformedDeletionError):
        parse({b"user_id": b"\xff\xfe", b"deleted_at": b"2026-12-07T16:57:50Z"})
