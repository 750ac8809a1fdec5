"""The OpenAPI 3.1 document of a Bulwark service: Litestar's, corrected to say exactly what
the service accepts and answers. Served at ``/schema`` in development (`ContractJson`) and
published as ``docs/openapi/<service>.json`` (``make openapi``); both come from `build`.

What Litestar's own document gets wrong, and what `build` does instead:

- Error answers: Litestar documents a 400 in its own ``application/json`` shape; every
  error is ``application/problem+json`` (RFC 9457, `bulwark.common.problems`) or, on the
  OAuth form endpoints, RFC 6749 §5.2 JSON. Which statuses an operation can answer comes
  from the route itself through one table (`bulwark.common.openapi.answers`).
- Security: operations that take an authenticating dependency require the ``bearerAuth``
  scheme (RFC 6750, a JWT); the others require none.
- Request bodies: JSON bodies are described by msgspec, the library that decodes them
  (``additionalProperties: false``, lengths, documented patterns); form bodies, read by
  the handler itself, are declared with ``opt={"form": Struct}``. A body struct adds JSON
  Schema of its own with a ``json_schema_extra`` class variable; a `Schema`'s strings
  refuse NUL, an `Update` needs one field at least.
- Links: a ``201`` of ``POST /x`` links its body's ``id`` to the operations on
  ``/x/{param}`` (a stateful client, or schemathesis, follows them).
"""

import json
from collections.abc import Iterator
from typing import Any

import msgspec
from litestar import Litestar, Request
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.routes import HTTPRoute

from bulwark.common.openapi.answers import (
    ANSWERS,
    AUTHENTICATING,
    BODY,
    EVERY,
    FORM,
    OAUTH_ERROR_HEADERS,
    PATH,
    RATELIMIT_HEADERS,
    REQUEST_HEADERS,
    STATUSES,
)
from bulwark.common.problems import PROBLEM_JSON
from bulwark.common.schemas import NO_NUL_PATTERN, Schema, Update

_REF = "#/components/schemas/{name}"
_FORM = "application/x-www-form-urlencoded"
#: Security scheme of operations that need an access token.
BEARER = "bearerAuth"

_PROBLEM: dict[str, Any] = {
    "title": "Problem",
    "description": "Problem Details (RFC 9457), with the request's id.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "request_id"],
    "properties": {
        "type": {"type": "string", "description": "about:blank or a urn:bulwark:problem:..."},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {
            "type": "string",
            "description": "The request's path (absent when the server refused the request "
            "before reading it).",
        },
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "Every invalid field (validation problems only).",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}
_OAUTH_ERROR: dict[str, Any] = {
    "title": "OAuthError",
    "description": "An OAuth 2.0 error response (RFC 6749 §5.2).",
    "type": "object",
    "required": ["error", "error_description"],
    "properties": {
        "error": {
            "type": "string",
            "enum": [
                "invalid_request",
                "invalid_client",
                "invalid_grant",
                "unauthorized_client",
                "unsupported_grant_type",
                "invalid_scope",
            ],
        },
        "error_description": {"type": "string"},
    },
}


def _handlers(app: Litestar) -> Iterator[tuple[HTTPRoute, str, HTTPRouteHandler]]:
    """Every documented operation: its route, method and handler."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for method, (handler, _) in route.route_handler_map.items():
            if method != "OPTIONS" and handler.resolve_include_in_schema():
                yield route, method, handler


def traits(route: HTTPRoute, handler: HTTPRouteHandler) -> set[str]:
    """The keys of `ANSWERS` that apply to ``handler`` on ``route``: ``EVERY``, ``BODY`` (a
    ``data`` parameter), ``FORM`` (``opt["form"]``), ``PATH`` (path parameters) and the
    names of the dependencies the handler takes."""
    parameters = set(handler.parsed_fn_signature.parameters)
    found = {EVERY} | (parameters & set(handler.resolve_dependencies()))
    if "data" in parameters:
        found.add(BODY)
    if handler.opt.get("form") is not None:
        found.add(FORM)
    if route.path_parameters:
        found.add(PATH)
    return found


def statuses(route: HTTPRoute, handler: HTTPRouteHandler) -> list[int]:
    """Every error status ``handler`` can answer: its traits' rows of `ANSWERS` and its own
    ``opt["answers"]``, in ascending order."""
    codes = {code for trait in traits(route, handler) for code in ANSWERS.get(trait, ())}
    return sorted(codes | set(handler.opt.get("answers", ())))


def _not_null(schema: dict[str, Any]) -> None:
    """Drop ``null`` from a parameter's ``oneOf`` (Litestar's reading of ``str | None``): a
    query value is text, and leaving it out is how a client gives none."""
    others = [each for each in schema.get("oneOf", ()) if each != {"type": "null"}]
    if len(others) == 1 and len(schema["oneOf"]) == 2:
        del schema["oneOf"]
        schema.update(others[0])


def _error_response(status: int, *, oauth: bool) -> dict[str, Any]:
    description, headers = STATUSES[status]
    if oauth:
        schema: dict[str, Any] = {"$ref": _REF.format(name="OAuthError")}
        oauth_response: dict[str, Any] = {
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
        if status in OAUTH_ERROR_HEADERS:
            oauth_response["headers"] = dict(OAUTH_ERROR_HEADERS[status])
        return oauth_response
    schema = {
        "allOf": [
            {"$ref": _REF.format(name="Problem")},
            {"properties": {"status": {"const": status}}},
        ]
    }
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": schema}},
    }
    if headers:
        response["headers"] = dict(headers)
    return response


def _body_schemas(app: Litestar) -> dict[str, Any]:
    """msgspec's JSON Schemas of the JSON request bodies (and of declared forms), by name."""
    types: list[Any] = []
    for _, _, handler in _handlers(app):
        if (data := handler.parsed_fn_signature.parameters.get("data")) is not None:
            types.append(data.annotation)
        if (form := handler.opt.get("form")) is not None:
            types.append(form)
    _, components = msgspec.json.schema_components(types, ref_template=_REF)
    for struct in types:
        if isinstance(struct, type) and hasattr(struct, "json_schema_extra"):
            components[struct.__name__].update(struct.json_schema_extra)
        if not (isinstance(struct, type) and issubclass(struct, Schema)):
            continue
        schema = components[struct.__name__]
        if issubclass(struct, Update):
            schema["minProperties"] = 1
        for field in schema["properties"].values():  # Schema refuses NUL in every string
            if field.get("type") == "string":
                field.setdefault("pattern", NO_NUL_PATTERN)
    return components


def _operation(
    document: dict[str, Any], route: HTTPRoute, method: str, handler: HTTPRouteHandler
) -> None:
    operation = document["paths"][route.path_format][method.lower()]
    found = traits(route, handler)
    codes = statuses(route, handler)
    oauth_codes = set(handler.opt.get("oauth_errors", ()))
    responses = {
        code: response
        for code, response in operation["responses"].items()
        if code != "default" and int(code) < 400
    }
    for response in responses.values():
        headers = {**response.pop("headers", {}), **(RATELIMIT_HEADERS if 429 in codes else {})}
        if headers:  # Litestar's own: the route's response_headers (Cache-Control, ...)
            response["headers"] = headers
    for code in codes:
        oauth = code in oauth_codes
        responses[str(code)] = _error_response(code, oauth=oauth)
        if 429 in codes and code != 429 and not oauth:
            responses[str(code)].setdefault("headers", {}).update(RATELIMIT_HEADERS)
    operation["responses"] = responses
    headers = {
        name: field
        for trait in sorted(found & set(REQUEST_HEADERS))
        for name, field in REQUEST_HEADERS[trait].items()
    }
    headers.update(handler.opt.get("headers", {}))
    operation["parameters"] = [
        *operation.get("parameters", []),
        *({"name": name, "in": "header", **field} for name, field in sorted(headers.items())),
    ]
    if not operation["parameters"]:
        del operation["parameters"]
    for parameter in operation.get("parameters", []):
        _not_null(parameter["schema"])
    if found & AUTHENTICATING:
        operation["security"] = [{BEARER: []}]
    else:
        operation["security"] = []
    if (form := handler.opt.get("form")) is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {_FORM: {"schema": {"$ref": _REF.format(name=form.__name__)}}},
        }


def _has_id(document: dict[str, Any], response: dict[str, Any]) -> bool:
    """Whether ``response``'s JSON body is a component with an ``id`` property."""
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    name = schema.get("$ref", "").rpartition("/")[2]
    component = document["components"]["schemas"].get(name, {})
    return "id" in component.get("properties", {})


def _links(document: dict[str, Any]) -> None:
    """Link the ``id`` in each ``201`` body of ``POST /x`` to every operation on
    ``/x/{param}``."""
    paths = document["paths"]
    for path, item in paths.items():
        created = item.get("post", {}).get("responses", {}).get("201")
        if created is None or not _has_id(document, created):
            continue
        for child, child_item in sorted(paths.items()):
            rest = child.removeprefix(path + "/")
            if child == rest or not (rest.startswith("{") and rest.endswith("}")):
                continue
            for _, operation in sorted(child_item.items()):
                created.setdefault("links", {})[operation["operationId"]] = {
                    "operationId": operation["operationId"],
                    "parameters": {rest[1:-1]: "$response.body#/id"},
                }


def build(app: Litestar) -> dict[str, Any]:
    """The service's OpenAPI document (a JSON-ready dict) from its Litestar ``app``, built
    with an `openapi_config`.

    Raises:
        litestar.exceptions.ImproperlyConfiguredException: ``app`` has no OpenAPI config.
    """
    document: dict[str, Any] = json.loads(json.dumps(app.openapi_schema.to_schema()))
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update(_body_schemas(app))
    schemas["Problem"] = _PROBLEM
    if any(handler.opt.get("oauth_errors") for _, _, handler in _handlers(app)):
        schemas["OAuthError"] = _OAUTH_ERROR
    components["securitySchemes"] = {
        BEARER: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    }
    for route, method, handler in _handlers(app):
        _operation(document, route, method, handler)
    _links(document)
    return document


def render(document: dict[str, Any]) -> str:
    """``document`` as the published file's text: sorted keys, two-space indents, a final
    newline (the same input always gives the same bytes)."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


class ContractJson(JsonRenderPlugin):
    """Serves `build`'s document at ``/schema`` and ``/schema/openapi.json``."""

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        """The corrected document (``openapi_schema``, Litestar's, is not used)."""
        del openapi_schema
        return render(build(request.app)).encode()


def openapi_config(title: str, version: str) -> OpenAPIConfig:
    """The OpenAPI config of a Bulwark service: `ContractJson` at ``/schema``, no UI."""
    return OpenAPIConfig(title=title, version=version, render_plugins=[ContractJson()])
