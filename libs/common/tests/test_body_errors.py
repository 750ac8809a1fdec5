"""`struct_errors` lists every error of a body, in the body's order, then the missing fields."""

from typing import Annotated

import msgspec
import pytest

from bulwark.common.body_errors import MAX_ERRORS, MAX_PATH, body_struct_errors, struct_errors
from bulwark.common.schemas import Schema

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=10)]


class Address(Schema, frozen=True):
    street_name: Name
    city: Name = "Paris"


class Person(Schema, frozen=True):
    display_name: Name
    age: int
    address: Address | None = None
    tags: Annotated[list[Name], msgspec.Meta(max_length=2)] = msgspec.field(default_factory=list)


def test_a_valid_body_has_no_errors() -> None:
    body = {"displayName": "Ann", "age": 3, "address": {"streetName": "Rue"}, "tags": ["a"]}
    assert struct_errors(body, Person) == []
    msgspec.convert(body, Person)  # and msgspec agrees


def test_unknown_invalid_and_missing_fields_are_all_listed_in_order() -> None:
    body = {"role": "admin", "age": "old", "isAdmin": True, "tags": ["a", "b", "c"], "id": 1}
    assert struct_errors(body, Person) == [
        ("role", "Object contains unknown field `role`"),
        ("age", "Expected `int`, got `str`"),
        ("isAdmin", "Object contains unknown field `isAdmin`"),
        ("tags", "Expected `array` of length <= 2"),
        ("id", "Object contains unknown field `id`"),
        ("displayName", "Object missing required field `displayName`"),
    ]


def test_nested_structs_and_list_items_are_named_by_their_path() -> None:
    body = {
        "displayName": "",
        "age": 1,
        "address": {"streetName": 5, "zip": "x"},
        "tags": ["ok", "far too long a tag"],
    }
    assert struct_errors(body, Person) == [
        ("displayName", "Expected `str` of length >= 1"),
        ("address.streetName", "Expected `str`, got `int`"),
        ("address.zip", "Object contains unknown field `zip`"),
        ("tags[1]", "Expected `str` of length <= 10"),
    ]
    assert struct_errors({"displayName": "A", "age": 1, "address": {}}, Person) == [
        ("address.streetName", "Object missing required field `streetName`"),
    ]


@pytest.mark.security(stride="T", asvs=("V2.2",))
def test_nul_is_listed_for_every_field_that_holds_it() -> None:
    body = {"displayName": "a\x00", "age": 1, "address": {"streetName": "b\x00"}}
    assert struct_errors(body, Person) == [
        ("displayName", "field `displayName` must not contain NUL characters"),
        ("address.streetName", "field `streetName` must not contain NUL characters"),
    ]


@pytest.mark.security(stride="T", asvs=("V2.2",))
def test_conversion_is_strict_as_the_schema_says() -> None:
    assert struct_errors({"displayName": "A", "age": "3"}, Person) == [
        ("age", "Expected `int`, got `str`")
    ]
    assert body_struct_errors({"displayName": "A", "age": 3.0}, Person) == [
        ("age", "Expected `int`, got `float`")
    ]
    assert body_struct_errors({"displayName": "A", "age": 3}, Person) == []


def test_a_body_that_is_not_an_object_is_one_error() -> None:
    assert struct_errors([1], Person) == [("body", "Expected `object`, got `array`")]


def test_errors_and_names_are_capped() -> None:
    body = {f"k{i}": i for i in range(500)}
    errors = struct_errors(body, Person)
    assert len(errors) == MAX_ERRORS
    long_key = "k" * 20_000
    [(field, message)] = struct_errors({long_key: 1, "displayName": "A", "age": 1}, Person)
    assert len(field) == MAX_PATH
    assert len(message) < MAX_PATH + 40
