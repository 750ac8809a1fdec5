"""Problem Details for HTTP APIs (RFC 9457): one error hierarchy, rendered by one handler set.

Raise a ``Problem`` subclass anywhere below a route; ``exception_handlers`` turns it into an
``application/problem+json`` response carrying the request's ``request_id``. Anything that is
not a ``Problem`` becomes a generic 500 whose body names nothing internal (no stack trace,
SQL, driver message, table or column); the exception is logged with the request id instead.
"""

import re
from collections.abc import Mapping
from typing import Any, ClassVar

import asyncpg
import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from bulwark.common.body_errors import JSON_DOCUMENT_STATE, body_struct, struct_errors
from bulwark.common.logging import get_logger

PROBLEM_JSON = "application/problem+json"
#: ``Retry-After`` of a 503 that names no other, in seconds.
DEFAULT_RETRY_AFTER_SECONDS = 5
_log = get_logger(__name__)


class FieldError(msgspec.Struct, frozen=True):
    """One invalid request field: ``field`` is its name as the client sent it."""

    field: str
    message: str


class Problem(Exception):  # noqa: N818  # RFC 9457 calls these "problems", not errors
    """Base of every error answered to a client; subclasses fix ``status`` and ``title``.

    Args:
        detail: human-readable explanation for this occurrence, safe to show a client.
        headers: extra response headers (for example ``Retry-After``).
    """

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"
    type: ClassVar[str] = "about:blank"

    def __init__(self, detail: str | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = dict(headers or {})

    def extensions(self) -> dict[str, Any]:
        """Extra members of the problem object (RFC 9457 §3.2); none by default."""
        return {}


class BadRequest(Problem):
    """400: the request is malformed."""

    status = 400
    title = "Bad Request"


class ValidationFailed(BadRequest):
    """400 naming every invalid field in ``errors``."""

    type = "urn:bulwark:problem:validation"
    title = "Validation failed"

    def __init__(self, errors: list[FieldError]):
        super().__init__("The request is invalid; see errors.")
        self.errors = errors

    def extensions(self) -> dict[str, Any]:
        """``errors``: a list of ``{field, message}``."""
        return {"errors": [msgspec.structs.asdict(error) for error in self.errors]}


class Unauthorized(Problem):
    """401: missing or invalid credentials; sends a Bearer challenge (RFC 6750 §3), with
    ``error`` (for example ``invalid_token``) when a token was presented."""

    status = 401
    title = "Unauthorized"

    def __init__(self, detail: str | None = None, error: str | None = "invalid_token"):
        challenge = (
            f'Bearer realm="bulwark", error="{error}"' if error else 'Bearer realm="bulwark"'
        )
        super().__init__(detail, {"WWW-Authenticate": challenge})


class Forbidden(Problem):
    """403: the caller is known, and may not do this."""

    status = 403
    title = "Forbidden"


class InsufficientScope(Forbidden):
    """403: the access token is valid but its ``scope`` lacks ``required``; sends the Bearer
    challenge ``error="insufficient_scope"`` naming the scope (RFC 6750 §3.1)."""

    def __init__(self, required: str):
        super().__init__(
            f"The access token's scope does not include {required!r}.",
            {
                "WWW-Authenticate": (
                    f'Bearer realm="bulwark", error="insufficient_scope", scope="{required}"'
                )
            },
        )


class EmailNotVerified(Forbidden):
    """403: the account's email address is not verified, and this needs it (docs/
    email-verification.md). Carries ``error: "email_not_verified"`` (an RFC 9457 §3.2
    extension member, as stable as ``type``, for the app to branch on) and no Bearer
    challenge: a new token would not help until the address is confirmed.

    Args:
        detail: what the app should do next (confirm the address, then log in or refresh).
    """

    type = "urn:bulwark:problem:email-not-verified"
    title = "Email address not verified"
    error: ClassVar[str] = "email_not_verified"

    def extensions(self) -> dict[str, Any]:
        """``error``: ``email_not_verified``."""
        return {"error": self.error}


class NotFound(Problem):
    """404: no such resource visible to the caller."""

    status = 404
    title = "Not Found"


class Conflict(Problem):
    """409: the request conflicts with existing state."""

    status = 409
    title = "Conflict"


class UnsupportedMediaType(Problem):
    """415: the body is not in a media type the endpoint accepts."""

    status = 415
    title = "Unsupported Media Type"


class TooManyRequests(Problem):
    """429 with ``Retry-After`` in whole seconds (RFC 9110 §10.2.3)."""

    status = 429
    type = "urn:bulwark:problem:rate-limited"
    title = "Too Many Requests"

    def __init__(self, retry_after_seconds: int):
        retry_after = max(1, retry_after_seconds)
        super().__init__(
            f"Too many requests; retry after {retry_after} seconds.",
            {"Retry-After": str(retry_after)},
        )


class ServiceUnavailable(Problem):
    """503: a dependency is down; the client may retry later. Always carries ``Retry-After``
    (`DEFAULT_RETRY_AFTER_SECONDS` unless ``headers`` give one)."""

    status = 503
    title = "Service Unavailable"

    def __init__(self, detail: str | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(
            detail, {"Retry-After": str(DEFAULT_RETRY_AFTER_SECONDS), **(headers or {})}
        )


def request_id_of(request: Request[Any, Any, Any]) -> str:
    """The request id set by ``RequestContextMiddleware`` (empty when it did not run)."""
    return str(request.scope.get("state", {}).get("request_id", ""))


def problem_response(
    request: Request[Any, Any, Any],
    status: int,
    title: str,
    detail: str,
    *,
    problem_type: str = "about:blank",
    extensions: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response[dict[str, Any]]:
    """Build an ``application/problem+json`` response with the request's ``request_id``."""
    body: dict[str, Any] = {
        "type": problem_type,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": request_id_of(request),
        **(extensions or {}),
    }
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=dict(headers or {}))


def _on_problem(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, Problem)  # noqa: S101  # registered for Problem only
    return problem_response(
        request,
        exc.status,
        exc.title,
        exc.detail,
        problem_type=exc.type,
        extensions=exc.extensions(),
        headers=exc.headers,
    )


_BACKTICKED = re.compile(r"`([^`]+)`")


def _field_errors(exc: ValidationException) -> list[FieldError]:
    """Turn Litestar/msgspec validation details into ``FieldError``s naming client fields."""
    errors: list[FieldError] = []
    extra = exc.extra if isinstance(exc.extra, list) else []
    for item in extra:
        if not isinstance(item, dict):
            continue
        message = str(item.get("message", "invalid value"))
        key = str(item.get("key", ""))
        if key in {"", "data"}:
            # msgspec names the offending field inside the message, e.g. "unknown field `role`"
            # or "Expected `str`, got `int` - at `$.email`".
            at = re.search(r"at `\$\.?([^`]*)`", message)
            named = _BACKTICKED.findall(message)
            if at:
                key = at.group(1) or "body"
            elif named and ("field" in message):
                key = named[-1]
            else:
                key = "body"
        if message == "'data'":  # Litestar's wording for a missing body
            key, message = "body", "a JSON body is required"
        errors.append(FieldError(field=key, message=re.sub(r" - at `[^`]*`", "", message)))
    return errors or [FieldError(field="body", message=exc.detail)]


def _all_body_errors(request: Request[Any, Any, Any]) -> list[FieldError]:
    """Every error of the request's JSON body against its handler's ``data`` Struct
    (`struct_errors`), or ``[]`` when there is no parsed body or no Struct to hold it."""
    document = request.scope["state"].get(JSON_DOCUMENT_STATE)
    target = body_struct(request.scope.get("route_handler"))
    if document is None or target is None:
        return []
    return [FieldError(field, message) for field, message in struct_errors(document, target)]


def _validation_problem(
    request: Request[Any, Any, Any], exc: ValidationException
) -> ValidationFailed:
    """A 400 naming every invalid field: Litestar's errors, with its one error about the
    body (msgspec stops at the first) replaced by all of them (`_all_body_errors`)."""
    errors = _field_errors(exc)
    extra = exc.extra if isinstance(exc.extra, list) else []
    if any(isinstance(item, dict) and item.get("source") == "body" for item in extra):
        body_errors = _all_body_errors(request)
        if body_errors:
            others = [
                error
                for item, error in zip(extra, errors, strict=False)
                if not (isinstance(item, dict) and item.get("source") == "body")
            ]
            errors = others + body_errors
    return ValidationFailed(errors)


def _on_http_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, HTTPException)  # noqa: S101  # registered for HTTPException only
    if isinstance(exc, ValidationException) and exc.extra:
        return _on_problem(request, _validation_problem(request, exc))
    status = exc.status_code
    if status >= 500:
        _log.error("http_exception", status=status, exc_info=exc)
        return problem_response(request, status, "Internal Server Error", "Unexpected error.")
    title = {
        400: "Bad Request",
        401: "Unauthorized",
        404: "Not Found",
        405: "Method Not Allowed",
        413: "Content Too Large",
        415: "Unsupported Media Type",
    }.get(status, "Client Error")
    # Litestar's own 4xx details ("JSON is malformed...", "Not Found") name nothing internal.
    detail = exc.detail if isinstance(exc.detail, str) and len(exc.detail) <= 200 else title
    return problem_response(request, status, title, detail, headers=exc.headers)


def _on_data_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    # Validation should stop such values first; if one gets through, the client still gets
    # a 400 that names nothing internal, and the gap is logged to be closed.
    _log.warning("database_rejected_value", error=type(exc).__name__)
    return problem_response(
        request, 400, "Bad Request", "A value in the request cannot be accepted."
    )


def _on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    _log.error("unhandled_exception", exc_info=exc)
    return problem_response(request, 500, "Internal Server Error", "Unexpected error.")


exception_handlers: ExceptionHandlersMap = {
    Problem: _on_problem,
    asyncpg.DataError: _on_data_error,
    HTTPException: _on_http_exception,
    Exception: _on_unexpected,
}
