"""Rules for notes: text checks, the opaque page cursor, and conditional writes (a note's
strong ETag is its version in quotes; RFC 9110 §8.8.3, §13.1.1)."""

import base64
import binascii
import re
import uuid
from datetime import UTC, datetime

import msgspec

from bulwark.api.notes import queries
from bulwark.api.preconditions import IfMatch, PreconditionFailed
from bulwark.common.db import Queryable, Record
from bulwark.common.problems import FieldError, ValidationFailed
from bulwark.common.schemas import has_control_characters

_ALLOWED_CONTROLS = frozenset({"\n", "\t"})
#: Longest cursor accepted, in characters (ours are about 80).
MAX_CURSOR_LENGTH = 200
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
# One of our ETags: a version (an SQL integer, so at most 9 digits here) in quotes.
_VERSION_TAG = re.compile(r'"([1-9][0-9]{0,8})"')
#: A cursor's shape in the OpenAPI document (unpadded base64url; empty means no cursor).
CURSOR_PATTERN = "^[A-Za-z0-9_-]*$"


def check_text(field: str, value: str, *, multiline: bool) -> str:
    """Return ``value`` trimmed (title) or as is (body), refusing control characters.

    Raises:
        ValidationFailed: a control or format character (newlines allowed in a body only),
            or a title that is empty once trimmed.
    """
    text = value if multiline else value.strip()
    if has_control_characters(text, allow=_ALLOWED_CONTROLS if multiline else frozenset()):
        raise ValidationFailed([FieldError(field, "must not contain control characters")])
    if not multiline and not text:
        raise ValidationFailed([FieldError(field, "must not be blank")])
    return text


class Cursor(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """Position after the last note of a page: its ``created_at`` and ``id``."""

    created_at: datetime
    id: uuid.UUID


def encode_cursor(cursor: Cursor) -> str:
    """The opaque cursor string handed to clients (base64url, no padding)."""
    return base64.urlsafe_b64encode(msgspec.json.encode(cursor)).rstrip(b"=").decode()


def decode_cursor(raw: str) -> Cursor:
    """Parse a cursor from ``encode_cursor``: at most `MAX_CURSOR_LENGTH` characters of
    unpadded base64url holding exactly ``[created_at, id]``, with a zone and within the years
    Postgres holds. The typed decoder stops at the first unexpected token, so a deep or wide
    forgery costs nothing.

    Raises:
        ValidationFailed: the cursor is not one we issued (field ``cursor``).
    """
    if len(raw) > MAX_CURSOR_LENGTH or not _BASE64URL.fullmatch(raw) or len(raw) % 4 == 1:
        raise _not_a_cursor()
    try:
        padded = raw + "=" * (-len(raw) % 4)
        cursor = msgspec.json.decode(base64.urlsafe_b64decode(padded), type=Cursor)
        # A time Postgres cannot hold (year 0 or 10000 once in UTC) is not one we issued.
        in_utc = cursor.created_at.astimezone(UTC)
    except (ValueError, OverflowError, binascii.Error, msgspec.DecodeError):
        raise _not_a_cursor() from None
    if cursor.created_at.tzinfo is None or not 1 <= in_utc.year <= 9999:
        raise _not_a_cursor()
    return cursor


def _not_a_cursor() -> ValidationFailed:
    return ValidationFailed([FieldError("cursor", "is not a valid cursor")])


def etag(version: int) -> str:
    """The strong ETag of a note at ``version``: ``"3"`` (RFC 9110 §8.8.3)."""
    return f'"{version}"'


def matching_versions(if_match: IfMatch | None) -> list[int] | None:
    """The versions a write conditioned on ``if_match`` may change: None for any (no
    ``If-Match``, or ``*``), else those named by its strong tags (tags that are not ours
    match nothing)."""
    if if_match is None or if_match.any:
        return None
    return [int(m.group(1)) for tag in if_match.tags if (m := _VERSION_TAG.fullmatch(tag))]


async def change_note(
    db: Queryable,
    owner_id: uuid.UUID,
    note_id: uuid.UUID,
    *,
    title: str | None,
    body: str | None,
    if_match: IfMatch,
) -> Record | None:
    """Apply a PATCH if the note still matches ``if_match``: the new row, or None when the
    owner has no such note.

    Raises:
        PreconditionFailed: the note exists but has another version (412).
    """
    versions = matching_versions(if_match)
    row = await queries.update_note(db, owner_id, note_id, title, body, versions=versions)
    if row is None and await queries.get_note(db, owner_id, note_id) is not None:
        raise PreconditionFailed
    return row


async def delete_note(
    db: Queryable, owner_id: uuid.UUID, note_id: uuid.UUID, if_match: IfMatch | None
) -> bool:
    """Delete the note if it matches ``if_match`` (None: unconditionally); False when the
    owner has no such note.

    Raises:
        PreconditionFailed: the note exists but has another version (412).
    """
    if await queries.delete_note(db, owner_id, note_id, matching_versions(if_match)):
        return True
    if if_match is not None and await queries.get_note(db, owner_id, note_id) is not None:
        raise PreconditionFailed
    return False
