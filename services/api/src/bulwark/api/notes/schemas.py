"""Request and response bodies for notes (camelCase on the wire)."""

from datetime import datetime
from typing import Annotated

import msgspec

from bulwark.common.schemas import Schema

Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Body = Annotated[str, msgspec.Meta(max_length=10000)]


class NoteCreate(Schema, frozen=True):
    """``POST /v1/notes``."""

    title: Title
    body: Body = ""


class NoteUpdate(Schema, frozen=True):
    """``PATCH /v1/notes/{id}``: the fields to change, at least one (JSON Schema:
    ``minProperties: 1``, no other property, no ``null``). Any other field (``id``,
    ``ownerId``, ``version``, ``createdAt``, ...) is refused by name (400)."""

    title: Title | msgspec.UnsetType = msgspec.UNSET
    body: Body | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        """Refuse an empty change (msgspec turns this into a 400)."""
        super().__post_init__()
        if self.title is msgspec.UNSET and self.body is msgspec.UNSET:
            raise ValueError("give at least one of title, body")


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
