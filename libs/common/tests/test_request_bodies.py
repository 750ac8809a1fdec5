"""The strict JSON body and query string checks: every hostile body or query is a 4xx
problem, never anything else."""

import json
import sys
from datetime import timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bulwark.common.problems import BadRequest, Problem, UnsupportedMediaType, ValidationFailed
from bulwark.common.request_bodies import (
    BODY_LIMITS,
    MAX_QUERY_FIELDS,
    DuplicateKeyError,
    JsonLimits,
    RefusedJsonError,
    check_content_coding,
    check_json_body,
    check_query_string,
    loads_bounded,
)

pytestmark = pytest.mark.security(stride="TD", asvs=("V2.2", "V4.1"))


def _check(body: bytes) -> None:
    check_json_body(body, "application/json", {})


def test_bulwarks_own_bodies_pass() -> None:
    _check(b'{"email": "a@example.com", "password": "x", "displayName": "A"}')
    _check(json.dumps({"title": "t", "body": "\u00e9\U0001f600\n" * 3000}).encode())
    _check(b'{"a": [[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]}')  # 16 levels
    _check(b'{"n": -12.5e3, "ok": true, "none": null, "s": "\\ud83d\\ude00 \\u0000"}')


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"[" * 17 + b"]" * 17, "nested deeper than 16 levels"),
        (b"[" * 100_000, "nested deeper than 16 levels"),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "nested deeper than 16 levels"),
        (b"[" + b"0," * 1024 + b"0]", "more than 1024 values"),
        (b"[" + b'"",' * 1024 + b'""]', "more than 1024 values"),
        (b"[" + b"[]," * 1024 + b"[]]", "more than 1024 values"),
        (b"{" + b",".join(b'"k%d":null' % i for i in range(600)) + b"}", "more than 1024 values"),
        (b'{"t": "' + b"x" * 16385 + b'"}', "string longer than 16384"),
        (b'{"' + b"k" * 16385 + b'": 1}', "string longer than 16384"),
        (b'["' + b"x" * 16385 + b'"]', "string longer than 16384"),
        (b'"' + b"x" * 16385 + b'"', "string longer than 16384"),
        (b'{"n": 1e999999}', "too large to represent"),
        (b'{"n": -1e400}', "too large to represent"),
        (b'{"n": ' + b"1" * 5000 + b"}", "number longer than 40"),
        (b'{"n": 0.' + b"0" * 5000 + b"1}", "number longer than 40"),
        (b'{"n": NaN}', "NaN, which is not JSON"),
        (b'{"n": -Infinity}', "-Infinity, which is not JSON"),
        (b'{"t": "\\ud800"}', "lone surrogate"),
        (b'{"t": "\\udfff\\ud800"}', "lone surrogate"),
        (b'{"\\udc00": 1}', "lone surrogate"),
        (b'["\\ud800"]', "lone surrogate"),
        (b'{"t": "\xff"}', "not valid UTF-8"),
        (b'{"t": "\xed\xa0\x80"}', "not valid UTF-8"),  # a surrogate encoded in UTF-8
        (b"\xef\xbb\xbf{}", "byte order mark"),
        (b"\xff\xfe{\x00}\x00", "not valid UTF-8"),  # UTF-16 with a BOM
        (b'{\x00"\x00a\x00"\x00:\x001\x00}\x00', "not valid JSON"),  # UTF-16 without
        (b'{"a": 1} x', "not valid JSON"),
        (b'{"a": 1}{"a": 2}', "not valid JSON"),
        (b"{'a': 1}", "not valid JSON"),
        (b'{"t": "a\x00b"}', "not valid JSON"),  # a raw control character in a string
        (b'"\\', "not valid JSON"),
    ],
)
def test_hostile_bodies_are_400_saying_why(body: bytes, detail: str) -> None:
    with pytest.raises(BadRequest) as refused:
        _check(body)
    assert not isinstance(refused.value, ValidationFailed)
    assert detail in refused.value.detail


def test_a_key_given_twice_is_named() -> None:
    with pytest.raises(ValidationFailed) as refused:
        _check(b'{"a": {"b": 1, "b": 2}}')
    assert [(e.field, e.message) for e in refused.value.errors] == [("b", "appears more than once")]


@pytest.mark.parametrize(
    ("media_type", "params"),
    [("text/plain", {}), ("application/json", {"charset": "utf-16"}), ("", {})],
)
def test_other_media_types_are_415(media_type: str, params: dict[str, str]) -> None:
    with pytest.raises(UnsupportedMediaType):
        check_json_body(b"{}", media_type, params)


def test_a_limit_is_met_exactly() -> None:
    limits = JsonLimits(max_depth=2, max_values=5, max_string=3, max_number=2)
    assert loads_bounded(b'{"ab": [12, "xyz"]}', limits) == {"ab": [12, "xyz"]}
    for over in (b"[[[]]]", b'{"a": [1, 2, 3]}', b'"abcd"', b"123", b'{"abcd": 1}'):
        with pytest.raises(RefusedJsonError):
            loads_bounded(over, limits)


def test_the_nesting_bound_ignores_brackets_inside_strings() -> None:
    limits = JsonLimits(max_depth=2, max_values=10, max_string=100, max_number=10)
    assert loads_bounded('{"a": "[[[[{{{{", "b": ["\\"[[["]}', limits)
    with pytest.raises(RefusedJsonError, match="nested"):
        loads_bounded('{"a": "]]]]", "b": [[]]}', limits)


@pytest.mark.parametrize("coding", [b"gzip", b"GZIP", b"identity, gzip", b"br, identity"])
def test_a_content_coding_is_415(coding: bytes) -> None:
    with pytest.raises(UnsupportedMediaType):
        check_content_coding(
            [(b"content-type", b"application/json"), (b"content-encoding", coding)]
        )


def test_no_content_coding_or_identity_passes() -> None:
    check_content_coding([(b"content-type", b"application/json")])
    check_content_coding([(b"content-encoding", b" Identity "), (b"content-encoding", b"")])


def test_a_duplicate_key_is_its_own_error() -> None:
    with pytest.raises(DuplicateKeyError) as duplicate:
        loads_bounded(b'{"k": 1, "k": 1}', BODY_LIMITS)
    assert duplicate.value.keys == ["k"]


def test_every_duplicate_key_is_named_once() -> None:
    with pytest.raises(ValidationFailed) as refused:
        _check(b'{"a": {"b": 1, "b": 2, "b": 3}, "c": 1, "c": 2, "a": 1}')
    assert [e.field for e in refused.value.errors] == ["b", "c", "a"]


# --- fuzz ---------------------------------------------------------------------------------

FUZZ = settings(max_examples=200, deadline=timedelta(seconds=2))
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=30,
)
_DEPTHS = st.integers(0, 40) | st.integers(900, 20_000)
_SPLICES = st.sampled_from(
    [
        b"1e999999",
        b"NaN",
        b"9" * 5000,
        b'"\\ud800"',
        b"\xef\xbb\xbf",
        b"\xff",
        b"\x00",
        b'"\\',
        b"} x",
        b'"a":1,"a":2',
        b"[" * 3000,
        b'"' + b'\\"[' * 3000,
    ]
)


@st.composite
def hostile_bodies(draw: st.DrawFn) -> bytes:
    """Valid JSON, then perhaps cut, deepened, widened or spliced with an attack."""
    body = json.dumps(draw(_JSON)).encode()
    match draw(st.integers(0, 5)):
        case 0:
            depth = draw(_DEPTHS)
            body = b"[" * depth + body + b"]" * draw(st.sampled_from([depth, 0, depth // 2]))
        case 1:
            body = b"[" + b",".join([body] * draw(st.integers(0, 3000))) + b"]"
        case 2:
            at = draw(st.integers(0, len(body)))
            body = body[:at] + draw(_SPLICES) + body[at:]
        case 3:
            body = body[: draw(st.integers(0, len(body)))]
        case 4:
            body = draw(st.binary(max_size=300))
    return body


def _check_under_default_recursion_limit(body: bytes) -> None:
    """As in a server: hypothesis raises the recursion limit while a test runs, which would
    hide a recursive parser's failure."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        _check(body)
    finally:
        sys.setrecursionlimit(limit)


@FUZZ
@given(hostile_bodies())
@example(b"[" * 1500)
@example(b'{"a":' * 1500)
def test_fuzz_a_body_passes_or_is_a_4xx_problem(body: bytes) -> None:
    problem: Problem | None = None
    try:
        _check_under_default_recursion_limit(body)
    except Problem as refused:
        problem = refused
    assert problem is None or 400 <= problem.status < 500


# --- query strings ------------------------------------------------------------------------


def test_ordinary_query_strings_pass() -> None:
    for query in (b"", b"limit=20", b"cursor=WyIy&limit=100", b"x=%C3%A9&y=&z", b"a+b=c+d"):
        check_query_string(query)
    check_query_string(b"&".join(b"p%d=1" % i for i in range(MAX_QUERY_FIELDS)))


@pytest.mark.parametrize(
    "query",
    [
        b"\xff",
        b"cursor=\xe9",
        b"cursor=%FF",
        b"cursor=%ED%A0%80",
        b"&".join(b"p%d=1" % i for i in range(MAX_QUERY_FIELDS + 1)),
        b"&" * 10_000,
        b"n" * 65 + b"=1",
        b"cursor=" + b"a" * 1025,
    ],
)
def test_hostile_query_strings_are_400(query: bytes) -> None:
    with pytest.raises(BadRequest):
        check_query_string(query)


@pytest.mark.parametrize("query", [b"limit=1&limit=2", b"limit=1&x=0&limit=1", b"x&x="])
def test_a_parameter_given_twice_is_named(query: bytes) -> None:
    with pytest.raises(ValidationFailed) as refused:
        check_query_string(query)
    assert len(refused.value.errors) == 1
    assert refused.value.errors[0].message == "appears more than once"


def test_every_parameter_given_twice_is_named_once() -> None:
    with pytest.raises(ValidationFailed) as refused:
        check_query_string(b"b=1&a=1&b=2&a=2&b=3")
    assert [e.field for e in refused.value.errors] == ["b", "a"]


@FUZZ
@given(
    st.binary(max_size=300) | st.from_regex(rb"([a-z%0-9A-F+]{0,8}=?[a-z0-9%A-F+]{0,12}&?){0,40}")
)
def test_fuzz_a_query_string_passes_or_is_a_400(query: bytes) -> None:
    problem: Problem | None = None
    try:
        check_query_string(query)
    except Problem as refused:
        problem = refused
    assert problem is None or problem.status == 400
