"""Strict request bodies: JSON only, UTF-8, shallow, and no key given twice.

Run before every handler (Litestar ``before_request``). msgspec would take the last of two
duplicate keys (a proxy or WAF reading the first would see another request) and hits the
recursion limit on deeply nested input; both are refused here with a 4xx before decoding.
"""

import json
from collections.abc import Callable, Coroutine
from typing import Any

from litestar import Request

from bulwark.common.problems import (
    BadRequest,
    FieldError,
    UnsupportedMediaType,
    ValidationFailed,
)

#: Deepest nesting of arrays and objects accepted; Bulwark's bodies need three levels.
MAX_JSON_DEPTH = 16
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKeyError(key)
        seen[key] = value
    return seen


def _depth(value: Any, limit: int) -> int:
    if limit < 0:
        return 0
    if isinstance(value, dict):
        return 1 + max((_depth(item, limit - 1) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(item, limit - 1) for item in value), default=0)
    return 0


def check_json_body(body: bytes, media_type: str, params: dict[str, str]) -> None:
    """Check a request body before it is decoded.

    Raises:
        UnsupportedMediaType: the body is not ``application/json`` in UTF-8 (415).
        ValidationFailed: a key appears twice in one object (400, names the key).
        BadRequest: not JSON, or nested deeper than ``MAX_JSON_DEPTH`` (400).
    """
    if media_type != "application/json" or params.get("charset", "utf-8").lower() != "utf-8":
        raise UnsupportedMediaType("Send the body as application/json in UTF-8.")
    try:
        document = json.loads(body, object_pairs_hook=_no_duplicates)
    except _DuplicateKeyError as duplicate:
        raise ValidationFailed([FieldError(duplicate.key[:64], "appears more than once")]) from None
    except RecursionError:
        raise BadRequest("The JSON body is nested too deeply.") from None
    except ValueError:
        raise BadRequest("The body is not valid JSON.") from None
    if _depth(document, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise BadRequest("The JSON body is nested too deeply.")


def strict_json_bodies(
    *, form_paths: tuple[str, ...] = ()
) -> Callable[[Request[Any, Any, Any]], Coroutine[Any, Any, None]]:
    """A ``before_request`` hook applying ``check_json_body`` to every request with a body,
    except under ``form_paths`` (OAuth endpoints, which take forms and check them themselves)."""

    async def hook(request: Request[Any, Any, Any]) -> None:
        if request.method not in _BODY_METHODS or request.url.path.startswith(form_paths):
            return
        body = await request.body()
        if body:
            media_type, params = request.content_type
            check_json_body(body, media_type, params)

    return hook
