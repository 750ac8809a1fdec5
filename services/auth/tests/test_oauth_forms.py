"""OAuth form bodies (RFC 6749 Appendix B, §3.2): parameters or ``invalid_request``, never
anything else."""

from datetime import timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bulwark.auth.oauth.errors import OAuthError
from bulwark.auth.oauth.routes import (
    MAX_FORM_FIELDS,
    MAX_FORM_NAME_LENGTH,
    MAX_FORM_VALUE_LENGTH,
    parse_form,
)

pytestmark = pytest.mark.security(stride="T", asvs=("V2.2",))


def test_a_token_request_is_parsed() -> None:
    body = b"grant_type=refresh_token&refresh_token=rt_abc-DEF_123&client_id=bulwark%2Dmobile"
    assert parse_form(body) == {
        "grant_type": "refresh_token",
        "refresh_token": "rt_abc-DEF_123",
        "client_id": "bulwark-mobile",
    }
    assert parse_form(b"") == {}
    assert parse_form(b"token=a+b%20c&token_type_hint=hint") == {
        "token": "a b c",
        "token_type_hint": "hint",
    }
    assert parse_form(b"x=%C3%A9") == {"x": "\u00e9"}


def test_every_repeated_parameter_is_named() -> None:
    with pytest.raises(OAuthError) as refused:
        parse_form(b"token=a&grant_type=x&token=b&grant_type=y&token=c")
    assert refused.value.error == "invalid_request"
    assert refused.value.description.endswith("more than once: token, grant_type.")


def test_a_parameter_without_a_value_is_omitted() -> None:
    """RFC 6749 §3.1: ``client_id=`` is no client id (not an unknown client's, 401)."""
    assert parse_form(b"grant_type=refresh_token&refresh_token=rt&client_id=") == {
        "grant_type": "refresh_token",
        "refresh_token": "rt",
    }
    assert parse_form(b"token=&token_type_hint=") == {}


@pytest.mark.parametrize(
    "body",
    [
        b"a=1&a=2",  # RFC 6749 §3.2: no parameter twice
        b"a=1&a",
        b"&".join(b"p%d=1" % i for i in range(MAX_FORM_FIELDS + 1)),
        b"&" * 100_000,
        b"a=%FF",  # not UTF-8 once decoded
        b"a=%ED%A0%80",  # a surrogate, UTF-8 encoded
        b"a=\xff",  # a raw byte outside ASCII
        "a=\u00e9".encode(),
        b"a=%00",
        b"a=x%0Ay",
        b"a=%E2%80%8B",  # zero-width space
        b"%00=1",
        b"=1",
        b"n" * (MAX_FORM_NAME_LENGTH + 1) + b"=1",
        b"a=" + b"v" * (MAX_FORM_VALUE_LENGTH + 1),
    ],
)
def test_hostile_forms_are_invalid_request(body: bytes) -> None:
    with pytest.raises(OAuthError) as refused:
        parse_form(body)
    assert (refused.value.error, refused.value.status) == ("invalid_request", 400)


def test_the_limits_are_met_exactly() -> None:
    fields = b"&".join(b"p%d=1" % i for i in range(MAX_FORM_FIELDS))
    assert len(parse_form(fields)) == MAX_FORM_FIELDS
    longest = b"n" * MAX_FORM_NAME_LENGTH + b"=" + b"v" * MAX_FORM_VALUE_LENGTH
    assert parse_form(longest) == {"n" * MAX_FORM_NAME_LENGTH: "v" * MAX_FORM_VALUE_LENGTH}


@settings(max_examples=200, deadline=timedelta(seconds=1))
@given(
    st.binary(max_size=400)
    | st.lists(
        st.tuples(
            st.text(max_size=10).map(lambda s: s.encode("utf-8", "surrogatepass")),
            st.binary(max_size=30),
        ),
        max_size=20,
    ).map(lambda pairs: b"&".join(k + b"=" + v for k, v in pairs))
    | st.from_regex(rb"([a-z_%0-9A-F+]{0,12}=[a-zA-Z0-9_%+\-]{0,20}&?){0,20}", fullmatch=True)
)
@example(b"a=%FF")
@example(b"&" * 5000)
def test_fuzz_a_form_is_parameters_or_invalid_request(body: bytes) -> None:
    try:
        params = parse_form(body)
    except OAuthError as refused:
        params, error = {}, refused.error
    else:
        error = None
    assert error in {None, "invalid_request"}
    assert len(params) <= MAX_FORM_FIELDS
    for name, value in params.items():
        assert isinstance(name, str)
        assert isinstance(value, str)
        assert 0 < len(name) <= MAX_FORM_NAME_LENGTH
        assert len(value) <= MAX_FORM_VALUE_LENGTH
        value.encode()  # Unicode text: it hashes and binds as a Postgres parameter
