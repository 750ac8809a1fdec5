"""The base of every request and response body, and the text checks shared by services."""

import sys
import unicodedata

import msgspec

# Unicode categories never accepted in single-line text: controls (Cc), format characters
# such as bidi overrides and zero-width joiners (Cf), and line/paragraph separators.
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp"})
#: Characters ``str.strip()`` removes that are not in `_INVISIBLE` (the rest are controls).
_SPACES = "".join(
    chr(c)
    for c in range(sys.maxunicode + 1)
    if chr(c).isspace() and unicodedata.category(chr(c)) not in _INVISIBLE
)


def has_control_characters(text: str, *, allow: frozenset[str] = frozenset()) -> bool:
    """True when ``text`` holds a control, format or separator character not in ``allow``."""
    return any(unicodedata.category(c) in _INVISIBLE and c not in allow for c in text)


def _class(chars: str) -> str:
    """A regex character-class body for ``chars``, as ranges of ``\\uXXXX``/``\\UXXXXXXXX``
    escapes (read alike by Python's ``re`` and the Rust and ECMA engines for the BMP)."""
    codes = sorted(map(ord, chars))
    ranges: list[list[int]] = []
    for code in codes:
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])

    def escape(code: int) -> str:
        return f"\\u{code:04X}" if code <= 0xFFFF else f"\\U{code:08X}"

    return "".join(escape(a) if a == b else f"{escape(a)}-{escape(b)}" for a, b in ranges)


_INVISIBLE_CHARS = "".join(
    chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) in _INVISIBLE
)
#: JSON Schema ``pattern`` of what `has_control_characters` accepts in one line of text that
#: is not blank once trimmed (titles, names). Documentation only: the rules check it.
SINGLE_LINE_PATTERN = (
    f"^[^{_class(_INVISIBLE_CHARS)}]*"
    f"[^{_class(_INVISIBLE_CHARS + _SPACES)}]"
    f"[^{_class(_INVISIBLE_CHARS)}]*$"
)
#: JSON Schema ``pattern`` of multi-line text: no control or format character but newline
#: and tab (note bodies).
MULTILINE_PATTERN = f"^[^{_class(_INVISIBLE_CHARS.replace(chr(10), '').replace(chr(9), ''))}]*$"
#: JSON Schema ``pattern`` of text without any control, format or separator character.
INVISIBLE_FREE_PATTERN = f"^[^{_class(_INVISIBLE_CHARS)}]*$"
#: JSON Schema ``pattern`` of any other string field of a `Schema`: no NUL.
NO_NUL_PATTERN = "^[^\\u0000]*$"


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
