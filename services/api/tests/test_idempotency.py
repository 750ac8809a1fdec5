"""Idempotency-Key rules: the header's syntax, the fingerprint, the verdict (no I/O)."""

import msgspec
import pytest

from bulwark.api.idempotency import MAX_KEY_LENGTH, StoredAnswer, fingerprint, judge, parse_key
from bulwark.api.notes.schemas import NoteCreate
from bulwark.common.problems import BadRequest

pytestmark = pytest.mark.security(stride="T", asvs=("V2.3",))


def test_a_key_is_a_structured_field_string() -> None:
    assert parse_key([]) is None
    assert parse_key(['"8e03978e-40d5-43e8-bc93-6894a57f9324"']) == (
        "8e03978e-40d5-43e8-bc93-6894a57f9324"
    )
    assert parse_key(['  "a b \\" c"  ']) == 'a b " c'  # escapes and outer spaces (RFC 8941)
    assert parse_key(['"k";v=1']) == "k"  # parameters are ignored
    assert parse_key(['"' + "k" * MAX_KEY_LENGTH + '"']) == "k" * MAX_KEY_LENGTH


@pytest.mark.parametrize(
    "values",
    [
        ["unquoted"],
        ['""'],
        ['"' + "k" * (MAX_KEY_LENGTH + 1) + '"'],
        ['"tab\t"'],
        ['"é"'],
        ['"a", "b"'],
        ['"a"', '"a"'],
        ["1"],
        ["?1"],
        [""],
    ],
)
def test_malformed_keys_are_refused(values: list[str]) -> None:
    with pytest.raises(BadRequest):
        parse_key(values)


def test_the_fingerprint_is_of_the_request_as_decoded() -> None:
    def of(raw: bytes, path: str = "/v1/notes") -> bytes:
        return fingerprint("POST", path, msgspec.json.decode(raw, type=NoteCreate))

    base = of(b'{"title": "t", "body": ""}')
    assert len(base) == 32
    assert of(b'{ "body":"",\n"title":"t" }') == base  # spacing and key order
    assert of(b'{"title": "t"}') == base  # an omitted default
    assert of(b'{"title": "u"}') != base
    assert of(b'{"title": "t"}', "/v1/uploads") != base


def test_the_verdict() -> None:
    mine = StoredAnswer(fingerprint=b"a" * 32, status=201, headers={}, body=b"{}")
    assert judge(None, b"a" * 32) == "execute"
    assert judge(mine, b"a" * 32) == "replay"
    assert judge(mine, b"b" * 32) == "reused"
