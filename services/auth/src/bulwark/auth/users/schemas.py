"""Request and response bodies for users (camelCase on the wire)."""

from typing import Annotated

import msgspec

from bulwark.common.schemas import SINGLE_LINE_PATTERN, Schema


class UserCreate(Schema, frozen=True):
    """``POST /v1/users``. Raw lengths are capped here; the rules check the rest."""

    email: Annotated[str, msgspec.Meta(max_length=320)]
    password: Annotated[str, msgspec.Meta(max_length=1024)]
    display_name: Annotated[
        str, msgspec.Meta(max_length=400, extra_json_schema={"pattern": SINGLE_LINE_PATTERN})
    ]


class User(Schema, frozen=True):
    """A user as shown to its owner."""

    id: str
    email: str
    display_name: str
