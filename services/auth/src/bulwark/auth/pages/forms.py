"""Reading what a browser sends the pages: a query string or an
``application/x-www-form-urlencoded`` form in UTF-8, a handful of short fields
(`bulwark.common.request_bodies.urlencoded_pairs`). What cannot be read is a 400 page, never
a stack trace (`on_bad_page_request`)."""

from typing import Any

from litestar import Request, Response

from bulwark.auth.pages.rendering import message
from bulwark.common.request_bodies import RefusedPairsError, urlencoded_pairs

#: Limits of a page's query string or form: a handful of short fields.
MAX_FIELDS = 16
MAX_NAME_LENGTH = 64
#: A value may be long: ``next`` carries a whole authorization request (``state`` up to 512
#: characters, percent-encoded twice).
MAX_VALUE_LENGTH = 8192
FORM = "application/x-www-form-urlencoded"


class UnreadablePageRequestError(Exception):
    """A query string or form the pages cannot read (shown as a 400 page)."""


def _pairs(raw: bytes) -> dict[str, str]:
    try:
        pairs = urlencoded_pairs(
            raw, max_fields=MAX_FIELDS, max_name=MAX_NAME_LENGTH, max_value=MAX_VALUE_LENGTH
        )
    except RefusedPairsError as refused:
        raise UnreadablePageRequestError(str(refused)) from None
    return {name: value for name, value in pairs.items() if value}


def read_query(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The query's non-empty parameters by name.

    Raises:
        UnreadablePageRequestError: too many, too long, repeated or not UTF-8 (400 page).
    """
    return _pairs(request.scope.get("query_string", b""))


async def read_form(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The form's non-empty fields by name.

    Raises:
        UnreadablePageRequestError: not a UTF-8 urlencoded form, or as `read_query` (400 page).
    """
    media_type, media_params = request.content_type
    if media_type != FORM or media_params.get("charset", "utf-8").lower() != "utf-8":
        raise UnreadablePageRequestError(f"the form must be sent as {FORM} in UTF-8")
    return _pairs(await request.body())


def on_bad_page_request(_request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Render a `UnreadablePageRequestError` as a 400 page."""
    return message(
        "Something went wrong", f"This request cannot be read: {exc}.", status=400, error=True
    )
