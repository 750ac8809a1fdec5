"""App versions parse strictly and order as SemVer 2.0.0 §11 says (python-semver, with our
length bound); checked on the spec's examples, on every malformed form the policy names,
and, for ordering, against an independent reading of §11 on generated versions."""

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulwark.common.app_versions.versions import (
    MAX_VERSION_LENGTH,
    MalformedVersion,
    parse_version,
    platform_named,
)

# SemVer 2.0.0 §11's own example, lowest first.
SPEC_ORDER = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "2.0.0",
    "2.1.0",
    "2.1.1",
]


def test_versions_order_as_the_spec_example() -> None:
    parsed = [parse_version(text) for text in SPEC_ORDER]
    assert all(low < high for low, high in itertools.pairwise(parsed))


def test_numbers_compare_as_numbers() -> None:
    assert parse_version("3.10.0") > parse_version("3.9.9")
    assert parse_version("1.0.0-2") < parse_version("1.0.0-10")
    assert parse_version("1.0.0-10") < parse_version("1.0.0-a")  # numeric below alphanumeric


def test_build_metadata_takes_no_part_in_the_order() -> None:
    assert parse_version("3.2.0+build.1") == parse_version("3.2.0+build.2")
    assert not parse_version("3.2.0+zzz") > parse_version("3.2.0")
    assert parse_version("3.2.0-rc.1+b") < parse_version("3.2.0")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1",
        "1.2",
        "1..3",
        "1.2.3.4",
        "01.2.3",
        "1.02.3",
        "1.2.03",
        "1.2.3-01",
        "1.2.3-",
        "1.2.3+",
        "1.2.3-a..b",
        "1.2.3+a..b",
        "+1.2.3",
        "-1.2.3",
        "v1.2.3",
        " 1.2.3",
        "1.2.3 ",
        "1.2.3\n",
        "1.2.3\x00",
        "1.2.3-ä",
        "\u0661.\u0662.\u0663",  # Arabic-Indic digits
        "\uff11.\uff12.\uff13",  # fullwidth digits
        "1.2.3-" + "a" * (MAX_VERSION_LENGTH - 5),  # one character too long
        "9" * 5000 + ".0.0",
    ],
)
def test_malformed_versions_are_refused(text: str) -> None:
    with pytest.raises(MalformedVersion):
        parse_version(text)


def test_the_longest_version_is_accepted() -> None:
    text = "1.2.3-" + "a" * (MAX_VERSION_LENGTH - 6)
    assert len(text) == MAX_VERSION_LENGTH
    assert str(parse_version(text)) == text


def test_platforms_are_named_in_any_case() -> None:
    assert platform_named("iOS") == "ios"
    assert platform_named("ANDROID") == "android"
    assert platform_named("web") is None
    assert platform_named(" ios") is None


# --- ordering against an independent reading of SemVer §11 ---------------------------------

_number = st.integers(min_value=0, max_value=30).map(str)
_alnum = st.text("abz-", min_size=1, max_size=3)
_identifier = st.one_of(_number, _alnum, st.builds(lambda n, a: n + a, _number, _alnum))
_version = st.builds(
    lambda core, pre, build: (
        ".".join(core)
        + (f"-{'.'.join(pre)}" if pre else "")
        + (f"+{'.'.join(build)}" if build else "")
    ),
    st.lists(_number, min_size=3, max_size=3),
    st.lists(_identifier, max_size=3),
    st.lists(st.text("ab01", min_size=1, max_size=2), max_size=2),
)


def _precedence(text: str) -> tuple[object, ...]:
    """A sort key per SemVer §11: the core numerically; a version without pre-release above
    any with one; pre-release identifiers one by one, numeric ones numerically and below
    alphanumeric ones (compared in ASCII order), a longer list above its prefix; build
    metadata ignored."""
    version = text.split("+", 1)[0]
    core, _, pre = version.partition("-")
    numbers = tuple(int(part) for part in core.split("."))
    if not pre:
        return (numbers, 1, ())
    identifiers = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in pre.split(".")
    )
    return (numbers, 0, identifiers)


@given(_version, _version)
def test_order_follows_the_spec(first: str, second: str) -> None:
    a, b = parse_version(first), parse_version(second)
    key_a, key_b = _precedence(first), _precedence(second)
    assert (a < b, a == b, a > b) == (key_a < key_b, key_a == key_b, key_a > key_b)
