"""If-Match (RFC 9110 §13.1.1) and notes' ETags (no I/O)."""

import pytest

from bulwark.api.notes.rules import etag, matching_versions
from bulwark.api.preconditions import (
    IfMatch,
    PreconditionRequired,
    parse_if_match,
    require_if_match,
)
from bulwark.common.problems import BadRequest


def test_if_match_lists() -> None:
    assert parse_if_match([]) is None
    assert parse_if_match([" * "]) == IfMatch(any=True, tags=frozenset())
    assert parse_if_match(['"1", W/"2" ,, "a,b"', '"3"']) == IfMatch(
        any=False, tags=frozenset({'"1"', '"a,b"', '"3"'})
    )  # weak tags never match; a tag may hold a comma; empty elements are allowed


@pytest.mark.parametrize("value", ["1", '"1" x', '*, "1"', 'w/"1"', '"1', '"a"b"'])
def test_malformed_if_match_is_400(value: str) -> None:
    with pytest.raises(BadRequest):
        parse_if_match([value])


@pytest.mark.security(stride="T", asvs=("V15.4",))
def test_patch_must_be_conditional() -> None:
    with pytest.raises(PreconditionRequired):
        require_if_match([])
    assert require_if_match(['"7"']).tags == {'"7"'}


def test_versions_named_by_if_match() -> None:
    assert etag(3) == '"3"'
    assert matching_versions(None) is None
    assert matching_versions(IfMatch(any=True, tags=frozenset())) is None
    tags = frozenset({'"3"', '"03"', '"x"', '"0"', '"1234567890"', etag(12)})
    assert sorted(matching_versions(IfMatch(any=False, tags=tags)) or []) == [3, 12]
