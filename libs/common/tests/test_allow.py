"""``Allow`` lists every method of a route, on OPTIONS and on 405 (RFC 9110 §10.2.1, §15.5.6),
however the route's handlers were registered (Litestar 2's OPTIONS keeps the first handler's
methods)."""

from litestar import Controller, Litestar, Router, delete, get, patch, post
from litestar.testing import TestClient

from bulwark.common.allow import answer_options, first_answer
from bulwark.common.problems import exception_handlers


class Items(Controller):
    path = "/items"

    @post(operation_id="createItem", status_code=201)
    async def create(self) -> None:
        return None

    @get(operation_id="listItems")
    async def list_items(self) -> list[str]:
        return []

    @get("/{item_id:uuid}", operation_id="getItem")
    async def read(self) -> None:
        return None

    @patch("/{item_id:uuid}", operation_id="updateItem")
    async def update(self) -> None:
        return None

    @delete("/{item_id:uuid}", operation_id="deleteItem")
    async def remove(self) -> None:
        return None


def _app() -> Litestar:
    return Litestar(
        route_handlers=[Router(path="/v1", route_handlers=[Items])],
        before_request=first_answer(answer_options),
        exception_handlers=exception_handlers,
    )


ITEM = "/v1/items/6f1b0a52-4c1e-4b43-9a3e-5c5e1f2b9d11"


def test_options_lists_every_method_of_the_route() -> None:
    client = TestClient(_app())
    collection = client.options("/v1/items")
    assert collection.status_code == 204
    assert collection.headers["allow"] == "GET, OPTIONS, POST"
    assert client.options(ITEM).headers["allow"] == "DELETE, GET, OPTIONS, PATCH"


def test_a_405_lists_what_is_allowed() -> None:
    response = TestClient(_app()).put(ITEM)
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    allowed = {method.strip() for method in response.headers["allow"].split(",")}
    assert allowed == {"DELETE", "GET", "OPTIONS", "PATCH"}
