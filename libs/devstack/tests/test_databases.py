"""Database names and URLs: no I/O."""

import pytest

from bulwark.devstack.databases import database_url, unique_names, validate_name


@pytest.mark.parametrize("name", ["bulwark_auth", "_x", "a1_b2", "a" * 63])
def test_valid_names_pass(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "1abc", "Bulwark", "a-b", 'a"; DROP DATABASE x; --', "a b", "é", "a" * 64, "a\n"]
)
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid database name"):
        validate_name(name)


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        (
            "postgresql://postgres@127.0.0.1:5432/postgres",
            "postgresql://postgres@127.0.0.1:5432/bulwark_auth",
        ),
        ("postgresql://u:p%40ss@db:6543", "postgresql://u:p%40ss@db:6543/bulwark_auth"),
        ("postgres://u@h/other?sslmode=require", "postgres://u@h/bulwark_auth?sslmode=require"),
        (
            "postgresql://postgres@/postgres?host=/run/pg",
            "postgresql://postgres@/bulwark_auth?host=/run/pg",
        ),
    ],
)
def test_database_url_replaces_only_the_database(server: str, expected: str) -> None:
    assert database_url(server, "bulwark_auth") == expected


def test_database_url_refuses_other_schemes_and_bad_names() -> None:
    with pytest.raises(ValueError, match="postgresql"):
        database_url("mysql://h/db", "bulwark_auth")
    with pytest.raises(ValueError, match="invalid database name"):
        database_url("postgresql://h/db", "x;y")


def test_unique_names_share_a_fresh_suffix() -> None:
    first, second = unique_names(), unique_names()
    assert first != second
    assert first["auth"].startswith("bulwark_auth_")
    assert first["api"].removeprefix("bulwark_api_") == first["auth"].removeprefix("bulwark_auth_")
    assert unique_names("x1") == {"auth": "bulwark_auth_x1", "api": "bulwark_api_x1"}
