"""Redaction of secrets from log events, by field name and by value pattern.

Applied by the logging pipeline to every event (exception text included) before it is
rendered, so no processor or caller can forget it. Field names follow OWASP's Logging Cheat
Sheet list of data never to log; value patterns catch secrets that appear under innocent
names (a JWT in a free-text message, a bearer credential inside a header dump, a card number
in a note body quoted by an error, ``password=...`` in a third-party library's message).

What comes out is plain JSON data: dicts with string keys, lists, strings, numbers, booleans,
None, and the few types msgspec renders without calling ``str`` (datetimes, UUIDs). Any other
object (an exception, a msgspec Struct, a dataclass, bytes) is turned into one of those first
and then redacted, so its ``str`` or its fields can never reach the output unredacted.
"""

import dataclasses
import datetime
import decimal
import functools
import itertools
import re
import uuid
from typing import Any

import msgspec

REDACTED = "[REDACTED]"
#: Nesting deeper than this is cut (also ends cycles): the value becomes ``"[TRUNCATED]"``.
MAX_DEPTH = 12
TRUNCATED = "[TRUNCATED]"

# Normalised (lower case, letters and digits only) field-name parts whose values are never
# written: a field is secret when its normalised name contains one of them.
_SECRET_FIELD_PARTS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",  # access_token, refresh_token, id_token, csrf_token, X-Auth-Token ...
    "authorization",  # the header, and authorization_code (RFC 6749 §4.1)
    "authcode",
    "cookie",  # Cookie and Set-Cookie
    "apikey",
    "accesskey",
    "privatekey",
    "credential",
    "cardnumber",
    "creditcard",
    "cvv",
    "cvc",
    "ssn",
    "socialsecurity",
    "codeverifier",  # PKCE (RFC 7636)
    "devicecode",  # RFC 8628 device_code
    "usercode",  # RFC 8628 user_code
    "otp",
    "mfacode",
    "recoverycode",
    "sessionkey",
)
# Short names that are secret only when they are the whole name ("pan" would otherwise hit
# "company", "pin" "pinned").
_SECRET_FIELD_NAMES = frozenset({"pan", "pin", "cvv2", "jwt", "dsn"})

# Secret field names inside a name (not a password itself).
_SENSITIVE_PART = (
    r"(?:password|passwd|passphrase|secret|token|authorization|auth_?code|cookie"
    r"|api[_-]?key|access[_-]?key|private[_-]?key|credential|card[_-]?number|cvv|cvc|ssn"
    r"|code_?verifier|device_?code|user_?code)"
)
# Every pattern below does work linear in the length of the text, whatever the text: a
# match is only tried where a run of the characters it starts with begins (a lookbehind),
# the first viable start inside that run is found once (an atomic group), runs are consumed
# possessively, and a quoted or bracketed value that is not closed is masked to the end
# (of the line, for a list) instead of failing (a failed scan, retried at each later start,
# is what made them quadratic or cubic: 16 KiB of "password-password-..." took minutes).
# Where a match may start inside a run, the part before it is captured as ``name`` and
# written back unchanged.
_VALUE_PATTERNS: tuple[re.Pattern[str], ...] = (
    # JWS and JWE compact serialisations (JWTs): base64url segments, header starting '{"'
    # (base64url "eyJ"), from the first "eyJ" of a run.
    re.compile(
        r"(?P<name>(?<![A-Za-z0-9_-])(?>[A-Za-z0-9_-]*?(?=eyJ)))"
        r"(?P<value>eyJ[A-Za-z0-9_-]{2,}+(?:\.[A-Za-z0-9_-]*+){2,4})"
    ),
    # Bearer, Basic, Digest credentials (RFC 6750 §2.1, RFC 7617, RFC 7616).
    re.compile(r"(?i)\b(?:bearer|basic|digest)\s++[A-Za-z0-9._~+/=,\"-]++"),
    # Bulwark refresh tokens: 'brt_' + 43 base64url characters (256 bits); shorter runs too,
    # in case one is cut.
    re.compile(r"brt_[A-Za-z0-9_-]{8,}+"),
    # A Cookie or Set-Cookie header line: every cookie in it, up to the end of the line.
    re.compile(r"(?i)(?P<name>\b(?:set-)?cookie\s*:\s*)(?!\[REDACTED\])(?P<value>[^\r\n\"]+)"),
    # ``name=value`` / ``name: value`` / ``"name": "value"`` / ``'name': 'value'`` inside free
    # text (query strings, form bodies, dict reprs, JSON quoted inside a message). The name
    # is a run of letters, ``_`` and ``-`` holding a secret part after a word boundary.
    re.compile(
        r"(?i)(?P<name>(?<![A-Za-z_-])(?>[A-Za-z_-]*?\b)(?>[A-Za-z_-]*?" + _SENSITIVE_PART + r")"
        r"[A-Za-z_-]*+\\?[\"']?\s*+[:=]\s*+)"
        r"(?!\[REDACTED\])(?P<value>\[[^\]\r\n]*+\]?|\\\"(?:[^\"\\]|\\[^\"])*+(?:\\\"|[^\r\n]*+)"
        r"|b?\"(?:[^\"\\]|\\.)*+\"?|b?'(?:[^'\\]|\\.)*+'?"
        r"|[^\s&,;}\]\"'\\]++)"
    ),
    # The password of a URL's userinfo (RFC 3986 §3.2.1): postgresql://user:PASSWORD@host.
    # The scheme starts at a word boundary inside a run of scheme characters.
    re.compile(
        r"(?i)(?P<name>(?<![a-z0-9+.-])(?>(?:(?<!\w)|[a-z0-9+.-]*?[+.-])(?=[a-z]))"
        r"[a-z0-9+.-]*+://[^\s:/@]*+:)(?!\[REDACTED\])(?P<value>[^\s@/]++)(?=@)"
    ),
    # US social security numbers: 3-2-4 digits, dashes or spaces.
    re.compile(r"(?<!\d)\d{3}[ -]\d{2}[ -]\d{4}(?!\d)"),
)
# A run of digit groups separated by up to three spaces, tabs or dashes (card numbers are written
# "4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111" ...).
# Bounded by anything but letters and digits, so hex identifiers (trace ids) are not read as
# digits; UUIDs are skipped whole (see `_UUID`).
_DIGIT_GROUPS = re.compile(r"(?<![0-9A-Za-z])\d+(?:[ \t-]{1,3}\d+)*(?![0-9A-Za-z])")
_UUID = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_SEPARATOR = re.compile(r"[ \t-]{1,3}")
_ANY_DIGIT = re.compile(r"\d")
# An RFC 3339 timestamp (every line's ``ts``): its digit groups, joined by the separators a
# card number may have, hold at most 11 digits (a card has 13 or more), and it has no word a
# pattern looks for, so it is returned as it is instead of scanned (and instead of filling
# the cache with a new text on every line).
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)")
_CARD_DIGITS = range(13, 20)  # ISO/IEC 7812 primary account numbers: 13 to 19 digits

# How many field names and short texts are remembered with what they redact to, and the
# longest text remembered (characters): bounded whatever a client sends.
_CACHED_TEXTS = 4096
_CACHED_LENGTH = 256
# Values msgspec renders without calling str(): safe to keep as they are.
_PLAIN = (bool, int, float, type(None), datetime.date, datetime.time, uuid.UUID, decimal.Decimal)
_SCALARS = frozenset({bool, int, float, type(None)})  # exact types, looked up in a dict loop


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def is_secret_field(name: object) -> bool:
    """True when a field called ``name`` must never be logged.

    Case, separators and type are ignored: ``"X-Api-Key"``, ``b"authorization"`` and
    ``"REFRESH_TOKEN"`` are all secret; a name that is not a string or bytes is read as its
    ``str``.
    """
    text = name.decode("latin-1") if isinstance(name, bytes | bytearray) else str(name)
    return _is_secret_name(text)


@functools.lru_cache(maxsize=_CACHED_TEXTS)
def _is_secret_name(text: str) -> bool:
    # Cached: the same few field names come back on every log line.
    normalised = _normalise(text)
    return normalised in _SECRET_FIELD_NAMES or any(
        part in normalised for part in _SECRET_FIELD_PARTS
    )


_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)  # a Luhn digit doubled, 9 subtracted above 9


def _luhn_sums(digits: str) -> tuple[tuple[list[int], ...], tuple[list[int], ...]]:
    """Prefix sums of ``digits`` by index parity, plain and doubled: ``plain[p][k]`` sums
    the digits of parity ``p`` at indexes below ``k``. With them, whether ``digits[a:b]``
    passes the Luhn check costs constant time (`_card_groups`)."""
    values = [int(char) for char in digits]
    even = [value if index % 2 == 0 else 0 for index, value in enumerate(values)]
    odd = [value - plain for value, plain in zip(values, even, strict=True)]
    plain = tuple(list(itertools.accumulate(part, initial=0)) for part in (even, odd))
    doubled = tuple(
        list(itertools.accumulate((_DOUBLED[value] for value in part), initial=0))
        for part in (even, odd)
    )
    return plain, doubled


def _card_groups(groups: list[str]) -> list[bool]:
    """Which of ``groups`` (runs of digits) belong to a run of consecutive groups that is
    a Luhn-valid 13-19 digit number. Linear: at most 7 runs of 13 to 19 digits start at
    each group, and each is checked in constant time."""
    plain, doubled = _luhn_sums("".join(groups))
    offsets = list(itertools.accumulate((len(group) for group in groups), initial=0))
    masked = [False] * len(groups)
    lowest = highest = 0
    for first, start in enumerate(offsets[:-1]):
        # groups[first:end] holds 13 to 19 digits for lowest <= end < highest.
        while lowest < len(offsets) and offsets[lowest] < start + _CARD_DIGITS.start:
            lowest += 1
        while highest < len(offsets) and offsets[highest] < start + _CARD_DIGITS.stop:
            highest += 1
        for end in range(lowest, highest):
            stop = offsets[end]
            # Counted from the right, every second digit is doubled: those of stop's parity.
            twice, once = doubled[stop % 2], plain[1 - stop % 2]
            if (twice[stop] - twice[start] + once[stop] - once[start]) % 10 == 0:
                masked[first:end] = [True] * (end - first)
    return masked


def _redact_cards(match: re.Match[str]) -> str:
    """Mask every run of consecutive groups of ``match`` that is a Luhn-valid 13-19 digit
    number; other groups are kept (``"qty 2 4111 1111 1111 1111"`` keeps ``2``)."""
    text = match.group(0)
    groups = _SEPARATOR.split(text)
    if sum(len(group) for group in groups) < _CARD_DIGITS.start:
        return text
    masked = _card_groups(groups)
    if not any(masked):
        return text
    separators = _SEPARATOR.findall(text)
    out: list[str] = []
    for index, group in enumerate(groups):
        if masked[index]:
            if not (index > 0 and masked[index - 1]):
                out.append(REDACTED)
        else:
            out.append(group)
        if index < len(separators) and not (masked[index] and masked[index + 1]):
            out.append(separators[index])
    return "".join(out)


def _redact_pair(match: re.Match[str]) -> str:
    return match.group("name") + REDACTED


def redact_text(text: str) -> str:
    """Return ``text`` with every secret-looking value masked: JWTs, bearer/basic/digest
    credentials, Bulwark refresh tokens, ``secret_name=value`` pairs, US SSNs (3-2-4) and
    card numbers of 13-19 digits that pass the Luhn check (contiguous or in groups
    separated by spaces or dashes).

    Three shortcuts give the same result faster (a log line is mostly ids, timestamps and
    repeated values): an ASCII letters-and-digits text with a letter in it is returned as it
    is (every pattern needs a separator, and a card number a digit run bounded by the text's
    ends); so is an RFC 3339 timestamp (no digit run of a card, no word a pattern needs); a
    text of at most `_CACHED_LENGTH` characters is redacted once and remembered.
    """
    if text.isascii() and text.isalnum() and not text.isdigit():
        return text
    if _TIMESTAMP.fullmatch(text):
        return text
    if len(text) <= _CACHED_LENGTH:
        return _redact_cached(text)
    return _redact_text(text)


@functools.lru_cache(maxsize=_CACHED_TEXTS)
def _redact_cached(text: str) -> str:
    return _redact_text(text)


def _redact_text(text: str) -> str:
    for pattern in _VALUE_PATTERNS:
        text = pattern.sub(_redact_pair if "value" in pattern.groupindex else REDACTED, text)
    if not _ANY_DIGIT.search(text):
        return text
    # Card numbers are looked for between UUIDs: a UUID of decimal digits only is an id.
    parts: list[str] = []
    position = 0
    for uuid_match in _UUID.finditer(text):
        parts.append(_DIGIT_GROUPS.sub(_redact_cards, text[position : uuid_match.start()]))
        parts.append(uuid_match.group(0))
        position = uuid_match.end()
    parts.append(_DIGIT_GROUPS.sub(_redact_cards, text[position:]))
    return "".join(parts)


def _key(key: object) -> str:
    if isinstance(key, str):
        return redact_text(key)
    if isinstance(key, bytes | bytearray):
        return redact_text(key.decode("utf-8", "replace"))
    return redact_text(str(key))


@functools.lru_cache(maxsize=_CACHED_TEXTS)
def _field(name: str) -> tuple[str, bool]:
    # A field name as logged and whether its value is secret, in one lookup per field.
    return _key(name), _is_secret_name(name)


def _redact_sequence(items: list[Any] | tuple[Any, ...], depth: int) -> list[Any]:
    # A (name, value) pair whose name is secret is a header or form field: mask the value.
    if len(items) == 2 and isinstance(items[0], str | bytes) and is_secret_field(items[0]):
        return [_key(items[0]), REDACTED]
    return [redact_value(item, depth + 1) for item in items]


def redact_value(value: Any, depth: int = 0) -> Any:  # noqa: PLR0911  # one return per type
    """Redact ``value`` recursively and return plain JSON data (see the module docstring).

    Mappings: values of secret field names (`is_secret_field`, at any depth) become
    ``"[REDACTED]"``, keys become strings. Sequences and sets become lists; a ``(name,
    value)`` pair with a secret name (a header tuple) has its value masked. Strings, bytes
    and every other object (by its ``str``) are masked by `redact_text`. msgspec Structs and
    dataclasses are redacted as mappings of their fields. Nesting beyond `MAX_DEPTH` becomes
    ``"[TRUNCATED]"``.
    """
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, _PLAIN):
        return value
    if depth >= MAX_DEPTH:
        return TRUNCATED
    if isinstance(value, msgspec.Struct):
        value = msgspec.structs.asdict(value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return _redact_mapping(value, depth)
    if isinstance(value, list | tuple):
        return _redact_sequence(value, depth)
    if isinstance(value, set | frozenset):
        return [redact_value(item, depth + 1) for item in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return redact_text(bytes(value).decode("utf-8", "replace"))
    return redact_text(str(value))


def _redact_mapping(value: dict[Any, Any], depth: int) -> dict[str, Any]:
    redacted = {}
    for key, item in value.items():
        if type(key) is str and len(key) <= _CACHED_LENGTH:
            name, secret = _field(key)
        else:
            name, secret = _key(key), is_secret_field(key)
        if secret:
            redacted[name] = REDACTED
        elif type(item) is str:  # the common cases of a log line, without a call
            redacted[name] = redact_text(item)
        elif type(item) in _SCALARS:
            redacted[name] = item
        else:
            redacted[name] = redact_value(item, depth + 1)
    return redacted


def redact_event(_logger: object, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: redact the whole event dict (see `redact_value`)."""
    redacted: dict[str, Any] = redact_value(event_dict)
    return redacted
