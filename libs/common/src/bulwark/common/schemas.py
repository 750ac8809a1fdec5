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
            refusal = self.field_refusal(wire_name, getattr(self, name))
            if refusal is not None:
                raise ValueError(refusal)

    @staticmethod
    def field_refusal(wire_name: str, value: object) -> str | None:
        """Why a field's value, once converted to its type, is refused (NUL in a string), or
        None; `bulwark.common.body_errors` asks it of each field to list every refusal."""
        if isinstance(value, str) and "\x00" in value:
            return f"field `{wire_name}` must not contain NUL characters"
        return None
