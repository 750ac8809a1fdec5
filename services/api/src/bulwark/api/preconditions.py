"""Conditional writes: ``If-Match`` (RFC 9110 §13.1.1) against strong entity tags (§8.8.3).

``If-Match: *`` matches any current representation; otherwise the field is a list of entity
tags, compared strongly (§8.8.3.2): a weak tag (``W/"3"``) never matches, not even our own
tag behind ``W/``. A resource that does not exist (or is another user's) answers 404 before
any precondition is evaluated (§13.2.1: preconditions are ignored when the answer without
them would not be 2xx or 412).
"""

import re
from dataclasses import dataclass

from bulwark.common.problems import BadRequest, Problem

HEADER = "If-Match"
# One list element (§5.6.1): optional whitespace, an entity-tag (which may hold a comma) or
# nothing, optional whitespace, then a comma or the end.
_ELEMENT = re.compile(r'[ \t]*(?:(W/)?("[\x21\x23-\x7e\x80-\xff]*"))?[ \t]*(,|\Z)')


class PreconditionFailed(Problem):
    """412: the ``If-Match`` tags do not match the current representation (RFC 9110 §15.5.13);
    the client should read the resource again and reapply its change."""

    status = 412
    title = "Precondition Failed"
    type = "urn:bulwark:problem:precondition-failed"

    def __init__(self) -> None:
        super().__init__("The resource has changed since it was read; read it again.")


class PreconditionRequired(Problem):
    """428: the request must be conditional (RFC 6585 §3): send ``If-Match`` with the
    resource's ``ETag``."""

    status = 428
    title = "Precondition Required"
    type = "urn:bulwark:problem:precondition-required"

    def __init__(self) -> None:
        super().__init__(f"Send {HEADER} with the ETag of the version you changed.")


@dataclass(frozen=True)
class IfMatch:
    """A parsed ``If-Match``: ``any`` for ``*``, else the strong ``tags`` listed (quoted,
    as sent)."""

    any: bool
    tags: frozenset[str]

    def matches(self, current: str) -> bool:
        """Whether the condition holds for an existing representation whose strong ETag is
        ``current`` (quoted)."""
        return self.any or current in self.tags


def parse_if_match(values: list[str]) -> IfMatch | None:
    """The ``If-Match`` in field lines ``values``, or None when absent.

    Raises:
        BadRequest: not ``*`` and not a list of entity tags (400).
    """
    if not values:
        return None
    joined = ",".join(values)
    if joined.strip(" \t") == "*":
        return IfMatch(any=True, tags=frozenset())
    tags: set[str] = set()
    position = 0
    while True:
        match = _ELEMENT.match(joined, position)
        if match is None:
            raise BadRequest(f'{HEADER} must be "*" or a list of entity tags such as "3".')
        weak, tag, separator = match.groups()
        if tag is not None and weak is None:
            tags.add(tag)
        if not separator:
            return IfMatch(any=False, tags=frozenset(tags))
        position = match.end()


def require_if_match(values: list[str]) -> IfMatch:
    """`parse_if_match`, for a method that must be conditional.

    Raises:
        PreconditionRequired: no ``If-Match`` (428).
        BadRequest: a malformed one (400).
    """
    if_match = parse_if_match(values)
    if if_match is None:
        raise PreconditionRequired
    return if_match
