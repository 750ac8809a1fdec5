"""Strict request bodies and query strings: JSON only, UTF-8, bounded, and no key or
parameter given twice.

Run before every handler (Litestar ``before_request``). A body with a content coding is
refused (415) on every route, forms included. msgspec would take the last of two
duplicate keys (a proxy or WAF reading the first would see another request) and hits the
recursion limit on deeply nested input; both are refused here with a 4xx before decoding,
as are documents too wide, strings or numbers too long, non-finite numbers, lone surrogates,
a byte order mark and bytes that are not UTF-8 (RFC 8259 §8.1).

`loads_bounded` is the parser; the access-token verifier uses it for JOSE headers and claims
with tighter `JsonLimits`.
"""

import json
import math
import re
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from litestar import Request

from bulwark.common.body_errors import JSON_DOCUMENT_STATE, body_struct, body_struct_errors
from bulwark.common.problems import (
    BadRequest,
    FieldError,
    UnsupportedMediaType,
    ValidationFailed,
)

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class JsonLimits(NamedTuple):
    """Bounds of a JSON document. Depth counts containers (``{}`` is 1, ``{"a": []}`` is 2);
    ``max_values`` counts every value, containers included, and every object key; lengths are
    in characters (a number's length is that of its literal)."""

    max_depth: int
    max_values: int
    max_string: int
    max_number: int


#: Request bodies: Bulwark's need three levels, a few fields and at most 10 000 characters
#: in one string (a note's body).
BODY_LIMITS = JsonLimits(max_depth=16, max_values=1024, max_string=16384, max_number=40)
#: Deepest nesting of arrays and objects accepted in a request body.
MAX_JSON_DEPTH = BODY_LIMITS.max_depth


class RefusedJsonError(ValueError):
    """The document is not JSON within its `JsonLimits`. ``reason`` completes the sentence
    "The JSON body ..." and names nothing internal."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DuplicateKeyError(RefusedJsonError):
    """Objects give each of ``keys`` twice or more (RFC 8259 §4: names SHOULD be unique; we
    insist); ``keys`` in the order met (inner objects first), each once, at most
    `MAX_NAMED_DUPLICATES`, each cut to 64 characters."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__("gives a key more than once")
        self.keys = keys


#: Most duplicate keys or parameters named in one refusal.
MAX_NAMED_DUPLICATES = 50


# A string literal (possessive, so an unterminated one costs one linear scan, not a
# quadratic search) or a bracket: the brackets outside strings give the nesting.
_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*+"?|[\[\]{}]', re.DOTALL)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_nesting(text: str, max_depth: int) -> None:
    if text.count("[") + text.count("{") <= max_depth:
        return  # the common case: no need to look closer
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        char = match.group()
        if char in "[{":
            depth += 1
            if depth > max_depth:
                raise RefusedJsonError(f"is nested deeper than {max_depth} levels")
        elif char in "]}":
            depth -= 1


def loads_bounded(data: bytes | str, limits: JsonLimits) -> Any:
    """Parse ``data`` (UTF-8 JSON text, RFC 8259) within ``limits``.

    Nesting is measured on the text before the parser runs, so a deep document never
    reaches a recursive parser; numbers and objects are checked as they are parsed, arrays
    right after.

    Raises:
        DuplicateKeyError: an object gives a key twice (every such key is named, once the
            document is parsed within the other limits).
        RefusedJsonError: not UTF-8, a byte order mark, not JSON (trailing data included),
            ``NaN``/``Infinity`` or a number that overflows to infinity, or a limit exceeded.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise RefusedJsonError("is not valid UTF-8") from None
    if data.startswith("\ufeff"):
        raise RefusedJsonError("starts with a byte order mark")
    _check_nesting(data, limits.max_depth)
    counter = _Counter(limits)
    try:
        document = json.loads(
            data,
            object_pairs_hook=counter.on_object,
            parse_int=counter.on_int,
            parse_float=counter.on_float,
            parse_constant=_refuse_constant,
        )
    except RefusedJsonError:
        raise
    except (ValueError, RecursionError):
        # No RecursionError can come from below the nesting bound; kept as a last line.
        raise RefusedJsonError("is not valid JSON") from None
    counter.arrays(document)
    if counter.duplicates:
        raise DuplicateKeyError(list(counter.duplicates))
    return document


def _refuse_constant(name: str) -> None:
    raise RefusedJsonError(f"has {name}, which is not JSON")


class _Counter:
    """Counts values for `loads_bounded`: every value (containers included) and every key
    counts one. Numbers count as the parser meets them, objects as they are built (their
    keys and their string, boolean and null members), arrays after parsing."""

    def __init__(self, limits: JsonLimits) -> None:
        self.limits = limits
        self.values = 0
        self.duplicates: dict[str, None] = {}  # ordered, each key once

    def add(self, values: int) -> None:
        self.values += values
        if self.values > self.limits.max_values:
            raise RefusedJsonError(f"has more than {self.limits.max_values} values")

    def _literal(self, literal: str) -> None:
        self.add(1)
        if len(literal) > self.limits.max_number:
            raise RefusedJsonError(f"has a number longer than {self.limits.max_number} characters")

    def on_int(self, literal: str) -> int:
        self._literal(literal)
        return int(literal)

    def on_float(self, literal: str) -> float:
        self._literal(literal)
        value = float(literal)
        if not math.isfinite(value):
            raise RefusedJsonError("has a number too large to represent")
        return value

    def _check_string(self, value: str) -> None:
        if len(value) > self.limits.max_string:
            raise RefusedJsonError(f"has a string longer than {self.limits.max_string} characters")
        if _LONE_SURROGATE.search(value):
            raise RefusedJsonError("has a string that is not Unicode text (a lone surrogate)")

    def _scalars(self, items: Iterable[object]) -> int:
        """How many of ``items`` are strings, booleans or null (checking the strings)."""
        scalars = 0
        for item in items:
            if isinstance(item, str):
                self._check_string(item)
            if item is None or isinstance(item, str | bool):
                scalars += 1
        return scalars

    def on_object(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        self.add(1 + len(pairs) + self._scalars(value for _, value in pairs))
        document: dict[str, Any] = {}
        for key, value in pairs:
            self._check_string(key)
            if key in document and len(self.duplicates) < MAX_NAMED_DUPLICATES:
                self.duplicates[key[:64]] = None
            document[key] = value
        return document

    def arrays(self, document: object) -> None:
        """Count and check every array (iteratively; the depth is bounded already), and a
        document that is a lone string."""
        if isinstance(document, str):
            self._check_string(document)
        stack = [document]
        while stack:
            value = stack.pop()
            if isinstance(value, dict):
                stack.extend(item for item in value.values() if isinstance(item, list | dict))
            elif isinstance(value, list):
                self.add(1 + self._scalars(value))
                stack.extend(item for item in value if isinstance(item, list | dict))


def check_json_body(body: bytes, media_type: str, params: dict[str, str]) -> Any:
    """Check a request body before it is decoded (limits: `BODY_LIMITS`); return it parsed
    (dicts, lists, str, int, float, bool, None).

    Raises:
        UnsupportedMediaType: the body is not ``application/json`` in UTF-8 (415).
        ValidationFailed: a key appears twice in one object (400, names every such key).
        BadRequest: not UTF-8 JSON, or beyond a limit: nesting, values, string or number
            length, a non-finite number, a lone surrogate (400, says which).
    """
    if media_type != "application/json" or params.get("charset", "utf-8").lower() != "utf-8":
        raise UnsupportedMediaType("Send the body as application/json in UTF-8.")
    try:
        return loads_bounded(body, BODY_LIMITS)
    except DuplicateKeyError as duplicate:
        raise ValidationFailed(
            [FieldError(key, "appears more than once") for key in duplicate.keys]
        ) from None
    except RefusedJsonError as refused:
        raise BadRequest(f"The JSON body {refused.reason}.") from None


#: Query strings: Bulwark's routes take a couple of short parameters (``cursor``: 200).
MAX_QUERY_FIELDS = 32
MAX_QUERY_NAME_LENGTH = 64
MAX_QUERY_VALUE_LENGTH = 1024


class RefusedPairsError(ValueError):
    """A query string or form `urlencoded_pairs` refuses; the message says why (safe to show
    a client). ``names`` are the parameters given twice, when that is the reason (in the
    order met, each once, at most `MAX_NAMED_DUPLICATES`)."""

    def __init__(self, reason: str, names: list[str] | None = None) -> None:
        super().__init__(reason)
        self.names = names or []


def urlencoded_pairs(
    raw: bytes, *, max_fields: int, max_name: int, max_value: int
) -> dict[str, str]:
    """The parameters of ``raw`` in ``application/x-www-form-urlencoded`` syntax (query
    strings and forms), percent-decoded as UTF-8, each name given once.

    Args:
        raw: the undecoded bytes (``scope["query_string"]``, a form body).
        max_fields: most parameters; counted on the raw bytes before any decoding.
        max_name, max_value: longest name and value, in characters once decoded.

    Raises:
        RefusedPairsError: bytes outside ASCII, percent-escapes that are not UTF-8, more than
            ``max_fields`` parameters, a name or value too long, or names given twice (a
            proxy or WAF may read the other one than the framework would; all are named).
    """
    if raw.count(b"&") >= max_fields:
        raise RefusedPairsError(f"more than {max_fields} parameters")
    try:
        pairs = parse_qsl(
            raw.decode("ascii"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=max_fields,
        )
    except ValueError:  # UnicodeError included
        raise RefusedPairsError("not percent-encoded UTF-8") from None
    params: dict[str, str] = {}
    duplicates: dict[str, None] = {}  # ordered, each name once
    for name, value in pairs:
        if len(name) > max_name or len(value) > max_value:
            raise RefusedPairsError("a parameter's name or value is too long")
        if name in params and len(duplicates) < MAX_NAMED_DUPLICATES:
            duplicates[name] = None
        params[name] = value
    if duplicates:
        listed = ", ".join(duplicates)
        raise RefusedPairsError(f"parameters appear more than once: {listed}", list(duplicates))
    return params


def check_query_string(query: bytes) -> None:
    """Check a raw query string (``scope["query_string"]``) before the router reads it
    (`urlencoded_pairs` with the ``MAX_QUERY_*`` limits).

    Raises:
        ValidationFailed: parameters appear twice (400, names each).
        BadRequest: any other refusal of `urlencoded_pairs` (400, says which).
    """
    if not query:
        return
    try:
        urlencoded_pairs(
            query,
            max_fields=MAX_QUERY_FIELDS,
            max_name=MAX_QUERY_NAME_LENGTH,
            max_value=MAX_QUERY_VALUE_LENGTH,
        )
    except RefusedPairsError as refused:
        if refused.names:
            raise ValidationFailed(
                [FieldError(name, "appears more than once") for name in refused.names]
            ) from None
        raise BadRequest(f"The query string: {refused}.") from None


def check_content_coding(headers: Iterable[tuple[bytes, bytes]]) -> None:
    """Refuse a body sent with a content coding (``Content-Encoding: gzip``): no route
    decodes one, and a proxy or WAF that did would see another body than the service.

    Args:
        headers: the raw header fields (``scope["headers"]``: lower-case names).

    Raises:
        UnsupportedMediaType: a ``Content-Encoding`` other than ``identity`` (415, RFC 9110
            §15.5.16).
    """
    for name, value in headers:
        if name == b"content-encoding" and value.strip().lower() not in {b"", b"identity"}:
            raise UnsupportedMediaType("Send the body without a Content-Encoding.")


def strict_json_bodies(
    *, form_paths: tuple[str, ...] = ()
) -> Callable[[Request[Any, Any, Any]], Coroutine[Any, Any, None]]:
    """A ``before_request`` hook applying `check_content_coding` to every POST, PUT and
    PATCH, then `check_query_string` to every request and `check_json_body` to every one
    with a body, except under ``form_paths`` (OAuth endpoints, which take forms, check them
    themselves and never read the query). DELETE and GET bodies are never read.

    A JSON body is then converted strictly to the handler's ``data`` Struct, as its OpenAPI
    schema says (Litestar's own conversion would take ``"12"`` for an integer): a 400 lists
    every error (`body_struct_errors`). The parsed body is kept in ``scope["state"]`` under
    `JSON_DOCUMENT_STATE` for the problem handler, should the framework's decode still fail.
    """

    async def hook(request: Request[Any, Any, Any]) -> None:
        takes_body = request.method in _BODY_METHODS
        if takes_body:
            check_content_coding(request.scope.get("headers", ()))
        if request.url.path.startswith(form_paths):
            return
        check_query_string(request.scope.get("query_string", b""))
        if not takes_body:
            return
        body = await request.body()
        if body:
            media_type, params = request.content_type
            document = check_json_body(body, media_type, params)
            request.scope["state"][JSON_DOCUMENT_STATE] = document
            target = body_struct(request.scope.get("route_handler"))
            if target is not None and (errors := body_struct_errors(document, target)):
                raise ValidationFailed([FieldError(field, why) for field, why in errors])

    return hook
