"""Request and response bodies for login and sessions."""

from datetime import datetime
from typing import Annotated

import msgspec

from bulwark.common.schemas import INVISIBLE_FREE_PATTERN, Schema

#: A device name: blank (taken as none) or one line without control characters.
ONE_LINE = INVISIBLE_FREE_PATTERN


class LoginRequest(Schema, frozen=True):
    """``POST /v1/auth/login``; ``device`` is a human-readable device name."""

    email: Annotated[str, msgspec.Meta(max_length=320)]
    password: Annotated[str, msgspec.Meta(max_length=1024)]
    device: (
        Annotated[str, msgspec.Meta(max_length=100, extra_json_schema={"pattern": ONE_LINE})] | None
    ) = None


class Session(Schema, frozen=True):
    """A live device session (refresh family) as shown to its owner."""

    id: str
    device: str | None
    device_id: str | None
    platform: str | None
    created_at: datetime
    last_used_at: datetime
    last_ip: str | None
    current: bool


class SessionList(Schema, frozen=True):
    """``GET /v1/auth/sessions``."""

    sessions: list[Session]
