"""Every error of a JSON body against its msgspec Struct, not only the first.

msgspec stops at the first error, so a registration with six forbidden fields would be told
about one, fix it, and be told about the next. `struct_errors` finds them all, from the
document `strict_json_bodies` has already parsed (kept under `JSON_DOCUMENT_STATE`); the
problem handler calls it only after the framework's decode has failed, so a valid body costs
nothing more.
"""

import re
import types
from typing import Annotated, Any, Union, get_args, get_origin

import msgspec

from bulwark.common.schemas import Schema

#: Key of ``scope["state"]`` under which `strict_json_bodies` keeps the parsed body.
JSON_DOCUMENT_STATE = "bulwark.json_document"
#: Most errors reported for one body; a body of 500 unknown keys is told about the first 50.
MAX_ERRORS = 50
#: Longest field path reported, in characters (an unknown key may be 16 384 long).
MAX_PATH = 64

# msgspec's location suffix: "Expected `str`, got `int` - at `$[0].title`".
_AT = re.compile(r" - at `\$([^`]*)`$")


def struct_errors(document: object, target: type[msgspec.Struct]) -> list[tuple[str, str]]:
    """Every error of ``document`` (JSON as parsed: dicts, lists, str, int, float, bool,
    None) against ``target``, as ``(field, message)`` pairs in a stable order: the body's
    keys in the order sent (unknown ones when ``target`` forbids them, then each known one
    that fails to convert), then the required fields missing, in the schema's order.

    ``field`` is the wire name (``displayName``); inside a nested Struct, the path to it
    (``address.city``, ``items[0].title``), cut to `MAX_PATH` characters. Messages are
    msgspec's, without the location. Conversion is msgspec's strict one, as
    `body_struct_errors` checks bodies (no ``"12"`` for an integer). At most `MAX_ERRORS`
    pairs.

    A `Schema`'s refusal of a converted value (`Schema.field_refusal`: NUL) is listed per
    field too. Errors only a whole Struct can find (a ``__post_init__`` of its own comparing
    fields) are not; an empty list then means "take msgspec's one error".
    """
    if not isinstance(document, dict):
        return _converted(document, target, "")
    return _object_errors(document, target, "")[:MAX_ERRORS]


def _object_errors(
    document: dict[str, Any], target: type[msgspec.Struct], prefix: str
) -> list[tuple[str, str]]:
    fields = {field.encode_name: field for field in msgspec.structs.fields(target)}
    forbids_unknown = target.__struct_config__.forbid_unknown_fields
    errors: list[tuple[str, str]] = []
    for key, value in document.items():
        field = fields.get(key)
        path = _join(prefix, key)
        if field is None:
            if forbids_unknown:
                unknown = f"Object contains unknown field `{key[:MAX_PATH]}`"
                errors.append((path[:MAX_PATH], unknown))
        elif (nested := _struct_of(field.type)) is not None and isinstance(value, dict):
            errors.extend(_object_errors(value, nested, path))
        else:
            errors.extend(_field_errors(target, key, value, field.type, path))
        if len(errors) >= MAX_ERRORS:
            return errors
    errors.extend(
        (_join(prefix, name), f"Object missing required field `{name}`")
        for name, field in fields.items()
        if field.required and name not in document
    )
    return errors


def _field_errors(
    target: type[msgspec.Struct], key: str, value: object, annotation: Any, path: str
) -> list[tuple[str, str]]:
    """The error of one field's ``value``: msgspec's, else the refusal of a `Schema`."""
    try:
        converted = msgspec.convert(value, annotation, strict=True)
    except msgspec.ValidationError as error:
        return [_located(str(error), path)]
    refusal = target.field_refusal(key, converted) if issubclass(target, Schema) else None
    return [] if refusal is None else [(path[:MAX_PATH], refusal)]


def _converted(value: object, annotation: Any, path: str) -> list[tuple[str, str]]:
    """``[]`` when ``value`` converts to ``annotation``, else its one error."""
    try:
        msgspec.convert(value, annotation, strict=True)
    except msgspec.ValidationError as error:
        return [_located(str(error), path)]
    return []


def _located(message: str, path: str) -> tuple[str, str]:
    """``(path, message)`` with msgspec's `` - at `$...` `` suffix moved into the path."""
    at = _AT.search(message)
    if at is not None:
        message, path = message[: at.start()], (path + at.group(1)).lstrip(".")
    return (path or "body")[:MAX_PATH], message


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _struct_of(annotation: Any) -> type[msgspec.Struct] | None:
    """The Struct that ``annotation`` holds, through ``Annotated`` and ``X | None``."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _struct_of(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        return _struct_of(members[0]) if len(members) == 1 else None
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return annotation
    return None


def body_struct(route_handler: Any) -> type[msgspec.Struct] | None:
    """The msgspec Struct that ``route_handler`` (a Litestar handler) takes as its ``data``
    body, or None."""
    signature = getattr(route_handler, "parsed_fn_signature", None)
    data = signature.parameters.get("data") if signature is not None else None
    target = data.annotation if data is not None else None
    if isinstance(target, type) and issubclass(target, msgspec.Struct):
        return target
    return None


def body_struct_errors(document: object, target: type[msgspec.Struct]) -> list[tuple[str, str]]:
    """``[]`` when ``document`` converts to ``target`` strictly, as its OpenAPI schema says
    (no ``"12"`` or ``12.0`` for an integer, no ``"true"`` for a boolean: Litestar's own
    conversion is lenient), else every error (`struct_errors`, or msgspec's one when only the
    whole Struct can find it)."""
    try:
        msgspec.convert(document, target, strict=True)
    except msgspec.ValidationError as error:
        return struct_errors(document, target) or [_located(str(error), "")]
    return []
