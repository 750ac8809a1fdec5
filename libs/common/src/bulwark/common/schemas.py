"""The base of every request and response body, and the text checks shared by services."""

import unicodedata

import msgspec

# Unicode categories never accepted in single-line text: controls (Cc), format characters
# such as bidi overrides and zero-width joiners (Cf), and line/paragraph separators.
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp"})


def has_control_characters(text: str, *, allow: frozenset[str] = frozenset()) -> bool:
    """True when ``text`` holds a control, format or separator character not in ``allow``."""
    return any(unicodedata.category(c) in _INVISIBLE and c not in allow for c in text)


class Schema(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    """Base msgspec Struct for API bodies (mass assignment is refused, not stripped).

    No string field may contain NUL: Postgres cannot store it, and nothing legitimate sends
    it. Fields with stricter rules (single-line names) check them in their own rules.
    """

    def __post_init__(self) -> None:
        """Refuse NUL in any top-level string field (msgspec turns this into a 400)."""
        for name, wire_name in zip(
            self.__struct_fields__, self.__struct_encode_fields__, strict=True
        ):
            value = getattr(self, name)
            if isinstance(value, str) and "\x00" in value:
                raise ValueError(f"field `{wire_name}` must not contain NUL characters")


class Update(Schema, frozen=True):
    """Base of ``PATCH`` bodies: every field defaults to ``msgspec.UNSET`` (absent: left as
    it is; ``null`` is refused like any other wrong type), and at least one must be given
    (the OpenAPI document says ``minProperties: 1``)."""

    def __post_init__(self) -> None:
        """Refuse NUL (`Schema`) and a body that changes nothing (msgspec turns either into a
        400)."""
        super().__post_init__()
        if all(getattr(self, name) is msgspec.UNSET for name in self.__struct_fields__):
            raise ValueError("give at least one field to change")
