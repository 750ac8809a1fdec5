"""Request and response bodies for notes (camelCase on the wire)."""

from datetime import datetime
from typing import Annotated

import msgspec

from bulwark.common.schemas import MULTILINE_PATTERN, SINGLE_LINE_PATTERN, Schema, Update

Title = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=200, extra_json_schema={"pattern": SINGLE_LINE_PATTERN}),
]
Body = Annotated[
    str, msgspec.Meta(max_length=10000, extra_json_schema={"pattern": MULTILINE_PATTERN})
]


class NoteCreate(Schema, frozen=True):
    """``POST /v1/notes``."""

    title: Title
    body: Body = ""


class NoteUpdate(Update, frozen=True):
    """``PATCH /v1/notes/{id}``: the fields to change, at least one (JSON Schema:
    ``minProperties: 1``, no other property, no ``null``). Any other field (``id``,
    ``ownerId``, ``version``, ``createdAt``, ...) is refused by name (400)."""

    title: Title | msgspec.UnsetType = msgspec.UNSET
    body: Body | msgspec.UnsetType = msgspec.UNSET


class Note(Schema, frozen=True):
    """A note as shown to its owner."""

    id: str
    title: str
    body: str
    created_at: datetime
    updated_at: datetime
    #: Raised by every update; the note's ``ETag`` is this number in quotes (``"3"``).
    version: int


class NotePage(Schema, frozen=True):
    """One page of notes, newest first; pass ``nextCursor`` back as ``cursor`` for more."""

    items: list[Note]
    next_cursor: str | None
